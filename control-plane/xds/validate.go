package xds

import (
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

type validator interface{ ValidateAll() error }

// Validate checks a snapshot as Envoy would before accepting it:
// snapshot.Consistent() (every referenced route exists), then ValidateAll()
// on every resource and on every message packed in an Any inside it (typed
// filter configs, transport sockets, access loggers, per-route configs,
// protocol options), recursively. ValidateAll on the outer message does not
// look inside an Any, which is where most of a listener's config lives. It
// returns the number of Any messages unpacked and checked.
func Validate(snap *cachev3.Snapshot) (int, error) {
	if err := snap.Consistent(); err != nil {
		return 0, fmt.Errorf("inconsistent snapshot: %w", err)
	}
	n := 0
	for _, typ := range []string{typeListener, typeRoute, typeCluster, typeSecret} {
		for name, r := range snap.GetResources(typ) {
			k, err := ValidateResource(r)
			n += k
			if err != nil {
				return n, fmt.Errorf("%s %q: %w", shortType(typ), name, err)
			}
		}
	}
	return n, nil
}

// ValidateResource validates one resource and the messages packed inside it.
func ValidateResource(r types.Resource) (int, error) {
	return validateDeep(r, "")
}

func validateDeep(m proto.Message, path string) (int, error) {
	v, ok := m.(validator)
	if !ok {
		return 0, fmt.Errorf("%s: %T has no ValidateAll", pathOr(path), m)
	}
	if err := v.ValidateAll(); err != nil {
		return 0, fmt.Errorf("%s: %w", pathOr(path), err)
	}
	return walk(m.ProtoReflect(), path)
}

func pathOr(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// walk finds every Any below m, unpacks it and validates the content.
func walk(m protoreflect.Message, path string) (int, error) {
	n := 0
	var err error
	visit := func(child protoreflect.Message, p string) {
		if a, ok := child.Interface().(*anypb.Any); ok {
			inner, uerr := a.UnmarshalNew()
			if uerr != nil {
				err = fmt.Errorf("%s: cannot unpack %s: %w", p, a.GetTypeUrl(), uerr)
				return
			}
			n++
			k, verr := validateDeep(inner, p+"<"+string(inner.ProtoReflect().Descriptor().FullName())+">")
			n += k
			err = verr
			return
		}
		k, werr := walk(child, p)
		n += k
		err = werr
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				visit(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i))
			}
		case fd.IsMap() && fd.MapValue().Kind() == protoreflect.MessageKind:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				visit(mv.Message(), fmt.Sprintf("%s[%s]", p, k.String()))
				return err == nil
			})
		case !fd.IsList() && !fd.IsMap() && fd.Kind() == protoreflect.MessageKind:
			visit(v.Message(), p)
		}
		return err == nil
	})
	return n, err
}
