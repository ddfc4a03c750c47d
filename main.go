// Command openbao-restore is one binary for the whole product: the
// composition function (the default), the companion reconciler and the
// restore executor that the Job runs. One image serves all three; see the
// README's "One image".
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/crossplane/function-sdk-go"

	"github.com/openbao-restore/openbao-restore/executor"
	"github.com/openbao-restore/openbao-restore/fn"
	"github.com/openbao-restore/openbao-restore/reconciler"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// FunctionCmd serves the composition function over gRPC.
type FunctionCmd struct {
	Debug bool `short:"d" help:"Emit debug logs in addition to info logs."`

	Network            string `help:"Network on which to listen for gRPC connections." default:"tcp"`
	Address            string `help:"Address at which to listen for gRPC connections." default:":9443"`
	TLSServerCertsDir  string `help:"Directory containing server certs (tls.key, tls.crt) and the CA used to verify client certificates (ca.crt)" env:"TLS_SERVER_CERTS_DIR"`
	Insecure           bool   `help:"Run without mTLS credentials. If you supply this flag --tls-server-certs-dir will be ignored."`
	MaxRecvMessageSize int    `help:"Maximum size of received messages in MB." default:"4"`
}

// Run the function.
func (c *FunctionCmd) Run() error {
	log, err := function.NewLogger(c.Debug)
	if err != nil {
		return err
	}
	// Compile the schema now, not on the first request.
	if _, _, err := schemas.Validate(nil, schemas.Policy{}); err != nil {
		return err
	}
	return function.Serve(&fn.Function{Log: log},
		function.Listen(c.Network, c.Address),
		function.MTLSCertificates(c.TLSServerCertsDir),
		function.Insecure(c.Insecure),
		function.MaxRecvMessageSize(c.MaxRecvMessageSize*1024*1024))
}

// RestoreCmd runs one restore: the program of the restore Job. Its
// configuration is the environment contract of openbao-operator's bao-backup
// restore mode plus mounted files (docs/architecture.md); the exit code
// tells the Job's podFailurePolicy whether a retry is safe.
type RestoreCmd struct{}

// ExecutorBinary is the executor alone (cmd/openbao-restore-executor),
// installed next to this binary in the image.
const ExecutorBinary = "openbao-restore-executor"

// Run the restore and exit with its code: in the executor alone when it is
// installed next to this binary (the image), so that the Job's process
// maps none of the function's and the reconciler's code; else here.
func (c *RestoreCmd) Run() error {
	if self, err := os.Executable(); err == nil {
		bin := filepath.Join(filepath.Dir(self), ExecutorBinary)
		if _, err := os.Stat(bin); err == nil {
			err := syscall.Exec(bin, []string{bin}, os.Environ()) //nolint:gosec // our own binary, beside this one
			fmt.Fprintf(os.Stderr, "starting %s: %v; restoring in this process instead\n", bin, err)
		}
	}
	os.Exit(executor.Run(executor.Options{}))
	return nil
}

// CLI is the command line: the function is the default command, so the
// Function package's runtime can start the image without arguments.
type CLI struct {
	Function   FunctionCmd        `cmd:"" default:"withargs" help:"Serve the composition function (default)."`
	Reconciler reconciler.Command `cmd:"" help:"Run the companion reconciler (the Provider package's runtime config passes this)."`
	Restore    RestoreCmd         `cmd:"" help:"Run one restore, a step-down or a drill's read check (the Jobs' program; also started by EXECUTOR_MODE=restore, step-down or read-check)."`
}

func main() {
	// openbao-operator's Job contract starts the executor with
	// EXECUTOR_MODE=restore and no arguments; honour it so either image
	// works in either Job. The step-down Job starts it the same way.
	args := os.Args[1:]
	if m := os.Getenv(schemas.EnvExecutorMode); (m == schemas.ModeRestore || m == schemas.ModeStepDown || m == schemas.ModeReadCheck) && len(args) == 0 {
		args = []string{"restore"}
	}
	cli := &CLI{}
	parser := kong.Must(cli, kong.Name("openbao-restore"),
		kong.Description("OpenBao snapshot restores for Crossplane: composition function, reconciler and executor."),
		kong.UsageOnError())
	ctx, err := parser.Parse(args)
	parser.FatalIfErrorf(err)
	ctx.FatalIfErrorf(ctx.Run())
}
