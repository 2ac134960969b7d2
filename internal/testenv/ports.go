package testenv

import (
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
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 21000 + rand.IntN(7000)
		if portsUsed[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		portsUsed[port] = true
		return port
	}
	t.Fatal("no free loopback port in 21000-27999")
	return 0
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)
