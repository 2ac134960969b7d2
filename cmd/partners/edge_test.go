package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/internal/config"
)

// TestXDSDump runs `partners xds dump` against a control plane serving in
// this process: the YAML is the region's resources with their versions; an
// unknown region is a usage error (exit 2).
func TestXDSDump(t *testing.T) {
	cfg, err := config.Load("../../config/partners-engine.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xds.New(xds.Options{Config: xds.NewConfig(cfg), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	defer func() { cancel(); <-done }()

	run := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		a := &app{stdout: &out, stderr: &errb}
		root := a.rootCmd()
		root.SetArgs(append([]string{"--config", "../../config/partners-engine.yaml"}, args...))
		root.SetOut(&errb)
		root.SetErr(&errb)
		err := root.ExecuteContext(context.Background())
		return out.String(), err
	}
	out, err := run("xds", "dump", "--region", "eu-west", "--server", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"region: eu-west", srv.Version("eu-west"), "name: partners-https", "name: partners-enterprise",
		"name: tier-sandbox", "cluster: partners-sandbox", "name: edge-server-cert", "domain: partners", "region: eu-west"} {
		if !strings.Contains(out, want) {
			t.Errorf("dump lacks %q", want)
		}
	}
	_, err = run("xds", "dump", "--region", "mars", "--server", lis.Addr().String())
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "us-east, eu-west") {
		t.Fatalf("unknown region: err %v, want exit 2 naming the regions", err)
	}
}
