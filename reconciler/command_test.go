package reconciler_test

import (
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/openbao-restore/openbao-restore/reconciler"
)

// A setting that would stall the reconciler is refused at start, naming
// the flag. (A negative --kube-api-qps once meant "no limit" to client-go
// and a reconciler that never reconciled.)
func TestCommandRefusesStallingSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*reconciler.Command)
		want string
	}{
		{"negative qps", func(c *reconciler.Command) { c.KubeAPIQPS = -1 }, "--kube-api-qps=-1"},
		{"negative burst", func(c *reconciler.Command) { c.KubeAPIBurst = -5 }, "--kube-api-burst=-5"},
		{"no workers", func(c *reconciler.Command) { c.Concurrency = 0 }, "--concurrency=0"},
		{"negative poll", func(c *reconciler.Command) { c.RestartPoll = -1 }, "--restart-poll=-1ns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &reconciler.Command{Concurrency: 1}
			if err := c.Validate(); err != nil {
				t.Fatalf("valid settings refused: %v", err)
			}
			tc.edit(c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tc.want)
			}
			if _, err := c.NewManager(&rest.Config{Host: "https://127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewManager() = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
