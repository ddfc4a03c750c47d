package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PodAddresses lists the StatefulSet's pods <sts>-0 … <sts>-<replicas-1>
// (the pods the StatefulSet controls) through the API and returns their
// OpenBao addresses, scheme://<pod IP>:8200, by ordinal. A pod IP needs no
// cluster DNS; with TLS the certificate is checked against TLS_SERVER_NAME.
// The executor's Role already lets it list pods.
func (k *KubeAPI) PodAddresses(ctx context.Context, namespace, sts string, replicas int, scheme string) ([]string, error) {
	pods, err := k.pods(ctx, namespace)
	if err != nil {
		return nil, err
	}
	var addrs []string
	for i := 0; i < replicas; i++ {
		name := fmt.Sprintf("%s-%d", sts, i)
		for _, p := range pods {
			ref := metav1.GetControllerOf(&p)
			if p.Name != name || ref == nil || ref.Kind != "StatefulSet" || ref.Name != sts || p.Status.PodIP == "" {
				continue
			}
			addrs = append(addrs, scheme+"://"+net.JoinHostPort(p.Status.PodIP, "8200"))
		}
	}
	return addrs, nil
}

// PodAddress is the OpenBao address of one pod, scheme://<pod IP>:8200.
func (k *KubeAPI) PodAddress(ctx context.Context, namespace, pod, scheme string) (string, error) {
	pods, err := k.pods(ctx, namespace)
	if err != nil {
		return "", err
	}
	for _, p := range pods {
		if p.Name == pod && p.Status.PodIP != "" {
			return scheme + "://" + net.JoinHostPort(p.Status.PodIP, "8200"), nil
		}
	}
	return "", transient(nil, "pod %s/%s has no IP address", namespace, pod)
}

// PodAt names the pod whose IP is the host of an OpenBao address, "" if
// none.
func (k *KubeAPI) PodAt(ctx context.Context, namespace, addr string) (string, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return "", err
	}
	pods, err := k.pods(ctx, namespace)
	if err != nil {
		return "", err
	}
	for _, p := range pods {
		if p.Status.PodIP != "" && p.Status.PodIP == u.Hostname() {
			return p.Name, nil
		}
	}
	return "", nil
}

// pods lists the pods of a namespace; the executor's Role lets it.
func (k *KubeAPI) pods(ctx context.Context, namespace string) ([]corev1.Pod, error) {
	u := fmt.Sprintf("%s/api/v1/namespaces/%s/pods", k.Base, namespace)
	code, out, err := k.call(ctx, http.MethodGet, u, nil, "")
	if err != nil {
		return nil, err
	}
	if err := kubeStatus(code, out, "list the pods of "+namespace); err != nil {
		return nil, err
	}
	var list corev1.PodList
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, transient(err, "decoding the pods of %s", namespace)
	}
	return list.Items, nil
}
