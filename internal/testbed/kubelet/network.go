package kubelet

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

func pickSubnet(s string) (*net.IPNet, error) {
	if s == "" {
		x, err := rand.Int(rand.Reader, big.NewInt(155))
		if err != nil {
			return nil, err
		}
		y, err := rand.Int(rand.Reader, big.NewInt(256))
		if err != nil {
			return nil, err
		}
		s = fmt.Sprintf("127.%d.%d.0/24", 100+x.Int64(), y.Int64())
	}
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("subnet: %w", err)
	}
	ones, bits := n.Mask.Size()
	if n.IP.To4() == nil || bits-ones < 3 {
		return nil, fmt.Errorf("subnet %s: want an IPv4 network of at least 8 addresses", s)
	}
	return n, nil
}

func ipAdd(ip net.IP, n int) net.IP {
	v := new(big.Int).SetBytes(ip.To4())
	v.Add(v, big.NewInt(int64(n)))
	b := v.Bytes()
	out := make(net.IP, 4)
	copy(out[4-len(b):], b)
	return out
}

// allocateIP picks the pod's IP (see Options.IPs) and records it.
func (k *Kubelet) allocateIP(pod *corev1.Pod) (string, error) {
	want := ""
	if k.opts.IPs != nil {
		want = k.opts.IPs(pod)
	}
	key := pod.Namespace + "/" + pod.Name
	k.mu.Lock()
	defer k.mu.Unlock()
	if want != "" {
		if net.ParseIP(want) == nil {
			return "", fmt.Errorf("IPs hook returned %q, not an IP", want)
		}
		if holder, ok := k.ipsUsed[want]; ok && holder != pod.UID {
			return "", fmt.Errorf("IP %s is still held by another pod", want)
		}
		k.ipsUsed[want] = pod.UID
		k.lastIP[key] = want
		return want, nil
	}
	if last, ok := k.lastIP[key]; ok {
		if holder, used := k.ipsUsed[last]; !used || holder == pod.UID {
			k.ipsUsed[last] = pod.UID
			return last, nil
		}
	}
	ones, bits := k.subnet.Mask.Size()
	size := 1 << (bits - ones)
	taken := map[string]bool{}
	for _, ip := range k.lastIP {
		taken[ip] = true
	}
	// Prefer addresses no pod had before, then any free one.
	for _, avoidPast := range []bool{true, false} {
		for i := 2; i < size-1; i++ {
			ip := ipAdd(k.subnet.IP, i).String()
			if _, used := k.ipsUsed[ip]; used || (avoidPast && taken[ip]) {
				continue
			}
			k.ipsUsed[ip] = pod.UID
			k.lastIP[key] = ip
			return ip, nil
		}
	}
	return "", fmt.Errorf("no free address in %s", k.subnet)
}

func (k *Kubelet) releaseIP(ip string, uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ipsUsed[ip] == uid {
		delete(k.ipsUsed, ip)
	}
}

func hostPort(host string) (string, string, error) {
	u, err := url.Parse(host)
	if err != nil || u.Host == "" {
		u, err = url.Parse("https://" + host)
		if err != nil {
			return "", "", fmt.Errorf("apiserver address %q: %w", host, err)
		}
	}
	h, p := u.Hostname(), u.Port()
	if p == "" {
		p = "443"
	}
	return h, p, nil
}
