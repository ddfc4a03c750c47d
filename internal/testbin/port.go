package testbin

import (
	"fmt"
	"net"
	"testing"
)

// FreePorts finds a loopback port p with p+offset also free, for servers
// that put a second listener at a fixed distance from the first (OpenBao's
// cluster port next to its API port, SeaweedFS's gRPC ports 10000 above).
func FreePorts(t testing.TB, offset int) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p+offset > 65535 {
			_ = l.Close()
			continue
		}
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+offset))
		_ = l.Close()
		if err == nil {
			_ = l2.Close()
			return p
		}
	}
	t.Fatal("no free port pair")
	return 0
}
