package testbed

import (
	"os"
	"strconv"
	"testing"
)

// Stop leaves no process behind: etcd, kube-apiserver, the helpers and the
// watchdog are all gone, not merely signalled.
func TestStopLeavesNoProcess(t *testing.T) {
	before := map[int]bool{}
	for _, pid := range childPIDs() {
		before[pid] = true
	}
	e := Start(t, Options{})
	var ours []int
	for _, pid := range childPIDs() {
		if !before[pid] {
			ours = append(ours, pid)
		}
	}
	// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
	// and the watchdog.
	if len(ours) != 6 {
		t.Errorf("want 6 child processes, got %d: %v", len(ours), ours)
	}
	e.Stop()
	for _, pid := range ours {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			t.Errorf("process %d (%q) still exists after Stop", pid, b)
		}
	}
}
