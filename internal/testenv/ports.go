package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// FreePort returns a loopback port of 21000-27999 that nothing listens on
// and this test binary has not handed out before, for a server a test
// starts later (a subprocess, a restarted process that must keep its
// address). Not port 0's pick: that comes from the kernel's ephemeral range
// (32768-60999), where any outgoing connection of any process on the
// machine can take the port between the check and the server's bind (CI: a
// chaos control plane's "listen xds 127.0.0.1:36369: bind: address already
// in use"). Outgoing connections never use this range.
func FreePort(t testing.TB) int {
	t.Helper()
	l, port, err := ListenIn(21000, 7000)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	return port
}

// ListenIn listens on a loopback port of [lo, lo+n) that this test binary
// has not handed out before (FreePort's or an earlier ListenIn's): a port
// stays its owner's for the run, even while the owner has it closed (a
// receiver that is "down"), so nothing else of the run binds it meanwhile.
func ListenIn(lo, n int) (net.Listener, int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	var last error
	for range 1000 {
		port := lo + rand.IntN(n)
		if portsUsed[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			last = err
			continue
		}
		portsUsed[port] = true
		return l, port, nil
	}
	return nil, 0, fmt.Errorf("no free loopback port in %d-%d: %v", lo, lo+n-1, last)
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)
