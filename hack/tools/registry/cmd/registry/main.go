// Command registry serves an in-memory OCI registry (go-containerregistry's
// pkg/registry) on a loopback address. It prints "listening on ADDR" once it
// accepts connections; with -address 127.0.0.1:0 it picks a free port.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("address", "127.0.0.1:0", "listen address")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", l.Addr())
	s := &http.Server{Handler: registry.New(registry.Logger(log.New(log.Writer(), "", 0))), ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(s.Serve(l))
}
