// Command podhelper is the program the harness kubelet's tests run as pods.
//
//	podhelper job FILE...   print each file, write a termination message
//	                        with them and $POD_IP, exit with $EXIT_CODE
//	podhelper serve DIR     serve HTTP on $POD_IP:8200 (/ready, /write,
//	                        /read, /whoami, /resolve), keeping files in DIR
//	podhelper incluster     get its own pod through InClusterConfig
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: podhelper job|serve|incluster ...")
		os.Exit(2)
	}
	var err error
	code := 0
	switch os.Args[1] {
	case "job":
		code, err = job(os.Args[2:])
	case "serve":
		err = serve(os.Args[2])
	case "incluster":
		err = incluster()
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "podhelper:", err)
		_ = os.WriteFile(terminationPath(), []byte("error: "+err.Error()), 0o644)
		os.Exit(1)
	}
	os.Exit(code)
}

func terminationPath() string {
	if p := os.Getenv("TERMINATION_PATH"); p != "" {
		return p
	}
	return "/dev/termination-log"
}

func job(files []string) (int, error) {
	var parts []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		fmt.Printf("%s: %s\n", f, b)
		parts = append(parts, fmt.Sprintf("%s=%s", filepath.Base(f), strings.TrimSpace(string(b))))
	}
	host, _ := os.Hostname()
	parts = append(parts, "podIP="+os.Getenv("POD_IP"), "hostname="+host)
	// A directory below /etc that the kubelet's overlay makes writable
	// without touching the host.
	if d := os.Getenv("WRITE_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(d, "x"), []byte("x"), 0o644); err != nil {
			return 0, err
		}
	}
	msg := strings.Join(parts, " ")
	if err := os.WriteFile(terminationPath(), []byte(msg), 0o644); err != nil {
		return 0, err
	}
	fmt.Println("message:", msg)
	code, _ := strconv.Atoi(os.Getenv("EXIT_CODE"))
	if code != 0 {
		fmt.Fprintf(os.Stderr, "exiting with %d\n", code)
	}
	return code, nil
}

func serve(dir string) error {
	ip := os.Getenv("POD_IP")
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "8200"))
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	fmt.Printf("listening on %s, data in %s, hostname %s, pid %d\n", ln.Addr(), dir, host, os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintf(w, "%s %s %d", os.Getenv("POD_NAME"), ip, os.Getpid())
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(r.URL.Query().Get("name"))), b, 0o644); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	mux.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(filepath.Join(dir, filepath.Base(r.URL.Query().Get("name"))))
		if err != nil {
			http.Error(w, err.Error(), 404)
			return
		}
		_, _ = w.Write(b)
	})
	mux.HandleFunc("/resolve", func(w http.ResponseWriter, r *http.Request) {
		addrs, err := net.LookupHost(r.URL.Query().Get("name"))
		if err != nil {
			http.Error(w, err.Error(), 404)
			return
		}
		_, _ = io.WriteString(w, strings.Join(addrs, ","))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		fmt.Println("SIGTERM: shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return os.WriteFile(terminationPath(), []byte("stopped by SIGTERM"), 0o644)
}

func incluster() error {
	for _, f := range []string{"/var/run/secrets/kubernetes.io/serviceaccount/token",
		"/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"} {
		if _, err := os.Stat(f); err != nil {
			return err
		}
	}
	if p := os.Getenv("EXTRA_TOKEN"); p != "" {
		if b, err := os.ReadFile(p); err != nil || len(b) == 0 {
			return fmt.Errorf("projected token %s: %v (%d bytes)", p, err, len(b))
		}
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ns, _ := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	pod, err := cs.CoreV1().Pods(string(ns)).Get(context.Background(), os.Getenv("POD_NAME"), metav1.GetOptions{})
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("uid=%s host=%s", pod.UID, cfg.Host)
	fmt.Println(msg)
	return os.WriteFile(terminationPath(), []byte(msg), 0o644)
}
