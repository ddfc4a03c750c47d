package kubelet

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// Logs returns the output of every container of every pod that had this
// namespace and name, oldest first, each under a header line.
func (k *Kubelet) Logs(namespace, pod string) string {
	k.mu.Lock()
	files := append([]string(nil), k.logs[namespace+"/"+pod]...)
	k.mu.Unlock()
	var sb strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			b = []byte(err.Error())
		}
		fmt.Fprintf(&sb, "==== %s ====\n%s", strings.TrimPrefix(f, k.dir+"/"), b)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			sb.WriteByte('\n')
		}
	}
	return sb.String()
}

// AllLogs returns Logs for every pod the kubelet ran, for failure dumps.
func (k *Kubelet) AllLogs() string {
	k.mu.Lock()
	keys := make([]string, 0, len(k.logs))
	for key := range k.logs {
		keys = append(keys, key)
	}
	k.mu.Unlock()
	sort.Strings(keys)
	var sb strings.Builder
	for _, key := range keys {
		ns, name, _ := strings.Cut(key, "/")
		sb.WriteString(k.Logs(ns, name))
	}
	return sb.String()
}

func (k *Kubelet) addLog(namespace, pod, file string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := namespace + "/" + pod
	for _, f := range k.logs[key] {
		if f == file {
			return
		}
	}
	k.logs[key] = append(k.logs[key], file)
}

func (k *Kubelet) logf(format string, args ...any) {
	k.opts.Logf("harness kubelet %s: "+format, append([]any{k.opts.Node}, args...)...)
}
