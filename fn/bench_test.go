package fn

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/crossplane/function-sdk-go/logging"
	fnv1 "github.com/crossplane/function-sdk-go/proto/v1"
)

// benchReq is the example XR once the lock is held: the busiest call, which
// validates the spec and composes all five resources.
func benchReq() *fnv1.RunFunctionRequest {
	return req(xrJSON(validSpec, `{"phase":"Running"}`), true, map[string]string{resLock: lockJSON("Held", holder)})
}

// BenchmarkRunFunction is the function in-process.
func BenchmarkRunFunction(b *testing.B) {
	f := &Function{Log: logging.NewNopLogger()}
	r := benchReq()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.RunFunction(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

// prebuilt is the baseline: an SDK function that returns the same response,
// built once, so the gRPC comparison measures only our work.
type prebuilt struct {
	fnv1.UnimplementedFunctionRunnerServiceServer
	rsp *fnv1.RunFunctionResponse
}

func (p *prebuilt) RunFunction(context.Context, *fnv1.RunFunctionRequest) (*fnv1.RunFunctionResponse, error) {
	return p.rsp, nil
}

func benchGRPC(b *testing.B, srv fnv1.FunctionRunnerServiceServer) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := grpc.NewServer()
	fnv1.RegisterFunctionRunnerServiceServer(s, srv)
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close() //nolint:errcheck // test teardown
	c := fnv1.NewFunctionRunnerServiceClient(conn)
	r := benchReq()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.RunFunction(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGRPC is the function over loopback gRPC.
func BenchmarkGRPC(b *testing.B) {
	benchGRPC(b, &Function{Log: logging.NewNopLogger()})
}

// BenchmarkGRPCPrebuilt is the baseline over loopback gRPC.
func BenchmarkGRPCPrebuilt(b *testing.B) {
	rsp, err := (&Function{Log: logging.NewNopLogger()}).RunFunction(context.Background(), benchReq())
	if err != nil {
		b.Fatal(err)
	}
	benchGRPC(b, &prebuilt{rsp: rsp})
}

// BenchmarkRunFunctionCold defeats the validation and render caches with a
// new spec every call: the cost of the first call for an XR.
func BenchmarkRunFunctionCold(b *testing.B) {
	f := &Function{Log: logging.NewNopLogger()}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r := req(xrJSON(strings.Replace(validSpec, "clusters/prod/a.snap", "clusters/prod/"+strconv.Itoa(i)+".snap", 1), `{"phase":"Running"}`),
			true, map[string]string{resLock: lockJSON("Held", holder)})
		if _, err := f.RunFunction(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}
