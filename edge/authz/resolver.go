package authz

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/schemas"
)

// Lookup finds the tenant of an API key hash; the registry implements it.
type Lookup interface {
	ByKeyHash(hash string, now time.Time) (*schemas.Tenant, bool)
}

// ResolverOptions configure a Resolver.
type ResolverOptions struct {
	Size        int           // entries in each cache
	TTL         time.Duration // positive entries (partner.gateway.tenant_resolution_ttl_sec)
	NegativeTTL time.Duration // unknown keys; 0 disables the negative cache
	Now         func() time.Time
}

// Resolver maps API key hashes to tenants through an expirable LRU. On a
// miss exactly one registry lookup per hash runs at a time (singleflight);
// unknown hashes are remembered for NegativeTTL so guessed keys cannot
// hammer the registry. Evict, called on every tenant change, removes the
// tenant's entries at once: a suspension or key rotation is effective at
// the next Check, not after the TTL.
type Resolver struct {
	lookup Lookup
	opt    ResolverOptions
	pos    *expirable.LRU[string, cached]
	neg    *expirable.LRU[string, struct{}]
	sf     singleflight.Group

	// mu orders cache fills against evictions: a lookup that started
	// before a change must not store its (stale) answer after the change
	// evicted the tenant. epoch counts changes.
	mu    sync.RWMutex
	epoch uint64

	lookups           *prometheus.CounterVec
	hit, negHit, miss prometheus.Counter
	registryCalls     prometheus.Counter
}

type cached struct {
	tenant  *schemas.Tenant
	expires *time.Time // the key's own expiry (a rotated key), if any
}

type lookupResult struct {
	tenant *schemas.Tenant
	ok     bool
}

// NewResolver returns a resolver over lookup.
func NewResolver(lookup Lookup, opt ResolverOptions) *Resolver {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	r := &Resolver{
		lookup: lookup,
		opt:    opt,
		pos:    expirable.NewLRU[string, cached](opt.Size, nil, opt.TTL),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_tenant_cache_total",
			Help: "API key resolutions by cache outcome: hit, negative_hit (known unknown key), miss."}, []string{"result"}),
		registryCalls: prometheus.NewCounter(prometheus.CounterOpts{Name: "partners_edge_registry_lookups_total",
			Help: "Registry lookups made on cache misses (after singleflight)."}),
	}
	r.hit, r.negHit, r.miss = r.lookups.WithLabelValues("hit"), r.lookups.WithLabelValues("negative_hit"), r.lookups.WithLabelValues("miss")
	if opt.NegativeTTL > 0 {
		r.neg = expirable.NewLRU[string, struct{}](opt.Size, nil, opt.NegativeTTL)
	}
	return r
}

// Collectors returns the resolver's metrics.
func (r *Resolver) Collectors() []prometheus.Collector {
	return []prometheus.Collector{r.lookups, r.registryCalls}
}

// Resolve returns the tenant owning the key with this hash, if the key is
// valid now.
func (r *Resolver) Resolve(hash string) (*schemas.Tenant, bool) {
	now := r.opt.Now()
	if c, ok := r.pos.Get(hash); ok {
		if c.expires == nil || now.Before(*c.expires) {
			r.hit.Inc()
			return c.tenant, true
		}
		r.pos.Remove(hash) // the rotated key expired while cached
	}
	if r.neg != nil {
		if _, ok := r.neg.Get(hash); ok {
			r.negHit.Inc()
			return nil, false
		}
	}
	r.miss.Inc()
	v, _, _ := r.sf.Do(hash, func() (any, error) {
		r.mu.RLock()
		epoch := r.epoch
		r.mu.RUnlock()
		t, ok := r.lookup.ByKeyHash(hash, now)
		r.registryCalls.Inc()
		r.mu.RLock()
		defer r.mu.RUnlock()
		if r.epoch == epoch {
			switch {
			case ok:
				r.pos.Add(hash, cached{tenant: t, expires: keyExpiry(t, hash)})
			case r.neg != nil:
				r.neg.Add(hash, struct{}{})
			}
		}
		return lookupResult{tenant: t, ok: ok}, nil
	})
	res := v.(lookupResult)
	return res.tenant, res.ok
}

// Evict removes every entry a tenant change may have made stale: the hashes
// of the old and the new version's keys, from both caches. The cache maps
// only a tenant's own key hashes to it, so these are all its entries; a key
// added by a rotation is dropped from the negative cache in case it was
// tried before it existed.
func (r *Resolver) Evict(old, new *schemas.Tenant) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.epoch++
	for _, t := range []*schemas.Tenant{old, new} {
		if t == nil {
			continue
		}
		for _, k := range t.Keys {
			r.pos.Remove(k.Hash)
			if r.neg != nil {
				r.neg.Remove(k.Hash)
			}
		}
	}
}

func keyExpiry(t *schemas.Tenant, hash string) *time.Time {
	for _, k := range t.Keys {
		if apikey.Equal(k.Hash, hash) {
			return k.ExpiresAt
		}
	}
	return nil
}
