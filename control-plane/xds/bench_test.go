package xds_test

import (
	"testing"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/partners-engine/partners-engine/control-plane/xds"
)

// BenchmarkBuild is one region's build and validation (the same whatever
// the tenant count).
func BenchmarkBuild(b *testing.B) {
	bl := xds.NewBuilder(xds.NewConfig(goldenConfig(b)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := bl.Build("us-east")
		if err != nil {
			b.Fatal(err)
		}
		snap, _ := cachev3.NewSnapshot("1", res)
		if _, err := xds.Validate(snap); err != nil {
			b.Fatal(err)
		}
	}
}
