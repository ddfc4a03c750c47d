// Command demo tells the story of one restore on the real stack of the
// end-to-end tests: a Kubernetes control plane, Crossplane v2.4 with our
// packages, a three-voter OpenBao with a read replica as openbao-operator
// runs it, SeaweedFS, and our executor under the harness kubelet. It is
// what `make demo` runs.
//
// It reuses the end-to-end harness (test/e2e) as it is: the harness takes
// a testing.TB, and the demo gives it one (demoT) that prints the harness's
// "e2e:" lines as the story, one line each with the time since the start,
// and keeps everything else (the harness's own chatter) for --verbose.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openbao-restore/openbao-restore/test/e2e"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout))
}

func run(args []string, stdout io.Writer) int {
	// The harness asks testing.Short(), which needs testing's flags,
	// parsed (to their defaults: not short).
	testing.Init()
	_ = flag.CommandLine.Parse(nil)
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var names []string
	for n := range e2e.Scenarios {
		names = append(names, n)
	}
	slices.Sort(names)
	scenario := fs.String("scenario", "happy", "what to show: "+strings.Join(names, ", ")+" (the others run after the happy path, which stores their snapshot)")
	verbose := fs.Bool("verbose", false, "also print the harness's own lines (processes, kubelet, control plane)")
	keep := fs.Bool("keep", os.Getenv("KEEP") == "1", "keep the stack running until Ctrl-C, with a KUBECONFIG to look around (also KEEP=1)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	play, ok := e2e.Scenarios[*scenario]
	if !ok {
		fmt.Fprintf(stdout, "demo: unknown --scenario %q: want one of %s\n", *scenario, strings.Join(names, ", "))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := newPrinter(stdout, *verbose)
	defer out.stop()
	t := newDemoT(ctx, out)
	out.story("bringing up the stack: a Kubernetes control plane, Crossplane v2.4 and our packages, OpenBao (three voters and a read replica, TLS on), SeaweedFS")

	var bed *e2e.RealBed
	t.play(func() {
		bed = e2e.StartRealBed(t)
		e2e.Scenarios["happy"](bed, t)
		if *scenario != "happy" && !t.Failed() {
			out.story("now the scenario " + *scenario)
			play(bed, t)
		}
	})
	code := 0
	switch {
	case ctx.Err() != nil:
		out.story("interrupted: tearing the stack down")
		code = 130
	case t.Failed():
		out.story(fmt.Sprintf("SUMMARY: the demo failed: %d problem(s), the first: %s (run with --verbose to see the harness)", t.failureCount(), t.firstFailure()))
		code = 1
	default:
		s := bed.Summary
		out.story(fmt.Sprintf("SUMMARY: claim to Completed in %s; %d OpenBao pods restarted (%s); data verified: %s back from the snapshot, %s gone",
			s.ToCompleted.Round(100*time.Millisecond), len(s.Restarted), strings.Join(s.Restarted, ", "), strings.Join(s.Back, " and "), strings.Join(s.Gone, ", ")))
		if *scenario != "happy" {
			out.story("scenario " + *scenario + ": passed")
		}
	}
	if *keep && code == 0 {
		out.stop()
		fmt.Fprintf(stdout, "\nThe stack keeps running. In another shell:\n\n  export KUBECONFIG=%s\n"+
			"  kubectl get openbaorestores,xopenbaorestores -A          # the claims and their phases\n"+
			"  kubectl get openbaoclusters -A -o jsonpath='{..operationLock}'   # the lock (free now)\n"+
			"  kubectl get lockrequests,jobs,pods -n vault-real          # what a restore composes, and the pods\n\n"+
			"Press Ctrl-C here to tear it down.\n", bed.Stack().Kubeconfig)
		<-ctx.Done()
	}
	t.cleanup()
	return code
}
