package xds

import (
	"fmt"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	rlsconf "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/partners-engine/partners-engine/control-plane/ratelimit"
)

type validator interface{ ValidateAll() error }

// Validate checks a snapshot as Envoy would before accepting it:
// snapshot.Consistent() (every referenced route exists), then ValidateAll()
// on every resource and on every message packed in an Any inside it (typed
// filter configs, transport sockets, access loggers, per-route configs,
// protocol options), recursively. ValidateAll on the outer message does not
// look inside an Any, which is where most of a listener's config lives. The
// rate-limit service's configuration carries no generated validation and is
// checked as the service loads it (ratelimit.Validate). It returns the number
// of Any messages unpacked and checked.
func Validate(snap *cachev3.Snapshot) (int, error) {
	if err := snap.Consistent(); err != nil {
		return 0, fmt.Errorf("inconsistent snapshot: %w", err)
	}
	n := 0
	for _, typ := range ResourceTypes {
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
	if c, ok := m.(*rlsconf.RateLimitConfig); ok {
		return 0, ratelimit.Validate(c)
	}
	n, err := validateMsg(m)
	if err != nil {
		return n, fmt.Errorf("%s: %w", pathOr(path), err)
	}
	return n, nil
}

func pathOr(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// pathError locates a violation inside nested messages; its path is built
// while unwinding, so the walk itself allocates no path strings.
type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string { return e.path + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

func at(seg string, err error) error {
	if pe, ok := err.(*pathError); ok {
		pe.path = seg + pe.path
		return pe
	}
	return &pathError{path: seg, err: err}
}

func validateMsg(m proto.Message) (int, error) {
	v, ok := m.(validator)
	if !ok {
		return 0, fmt.Errorf("%T has no ValidateAll", m)
	}
	if err := v.ValidateAll(); err != nil {
		return 0, err
	}
	return walk(m.ProtoReflect())
}

// walk finds every Any below m, unpacks it and validates the content. It
// descends only into fields whose type can hold an Any.
func walk(m protoreflect.Message) (int, error) {
	n := 0
	var err error
	visit := func(child protoreflect.Message) error {
		if a, ok := child.Interface().(*anypb.Any); ok {
			inner, uerr := a.UnmarshalNew()
			if uerr != nil {
				return fmt.Errorf("cannot unpack %s: %w", a.GetTypeUrl(), uerr)
			}
			n++
			k, verr := validateMsg(inner)
			n += k
			if verr != nil {
				return at("<"+string(inner.ProtoReflect().Descriptor().FullName())+">", verr)
			}
			return nil
		}
		k, werr := walk(child)
		n += k
		return werr
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() != protoreflect.MessageKind || !mayHoldAny(fd.MapValue().Message()) {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if e := visit(mv.Message()); e != nil {
					err = at("."+string(fd.Name())+"["+k.String()+"]", e)
				}
				return err == nil
			})
		case fd.Kind() != protoreflect.MessageKind || !mayHoldAny(fd.Message()):
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				if e := visit(l.Get(i).Message()); e != nil {
					err = at(fmt.Sprintf(".%s[%d]", fd.Name(), i), e)
				}
			}
		default:
			if e := visit(v.Message()); e != nil {
				err = at("."+string(fd.Name()), e)
			}
		}
		return err == nil
	})
	return n, err
}

var anyMemo sync.Map // protoreflect.FullName -> bool

// mayHoldAny reports whether a message of this type can contain an Any,
// directly or nested. Results that depended on a type still being computed
// (a recursive type) are not remembered unless true.
func mayHoldAny(md protoreflect.MessageDescriptor) bool {
	res, _ := mayHoldAnyRec(md, map[protoreflect.FullName]bool{})
	return res
}

func mayHoldAnyRec(md protoreflect.MessageDescriptor, inProgress map[protoreflect.FullName]bool) (res, tainted bool) {
	name := md.FullName()
	if name == "google.protobuf.Any" {
		return true, false
	}
	if v, ok := anyMemo.Load(name); ok {
		return v.(bool), false
	}
	if inProgress[name] {
		return false, true
	}
	inProgress[name] = true
	defer delete(inProgress, name)
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		sub := fd.Message()
		if fd.IsMap() {
			sub = fd.MapValue().Message()
		}
		if sub == nil {
			continue
		}
		r, t := mayHoldAnyRec(sub, inProgress)
		if r {
			anyMemo.Store(name, true)
			return true, false
		}
		tainted = tainted || t
	}
	if !tainted {
		anyMemo.Store(name, false)
	}
	return false, tainted
}
