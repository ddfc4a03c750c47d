package executor

import (
	"context"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// Source is an object store holding snapshots.
type Source interface {
	// Stat returns the object's size and version tag; an error coded
	// ExitSnapshot when it does not exist, ExitStorage when access is refused.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Open streams the object, refusing a different version than info's
	// (where the store can tell), so the bytes sent are the bytes checked.
	Open(ctx context.Context, key string, info ObjectInfo) (io.ReadCloser, error)
	// List returns up to max objects under prefix.
	List(ctx context.Context, prefix string, max int) ([]Entry, error)
	// URL names the object for messages, e.g. s3://bucket/key.
	URL(key string) string
	// Put streams r into a new object in constant memory (a safety
	// snapshot); access refused is coded ExitStorage.
	Put(ctx context.Context, key string, r io.Reader) error
}

// Entry is an object a List found.
type Entry struct {
	Key      string
	Size     int64
	ETag     string
	Modified time.Time
}

// keysOf are the entries' keys.
func keysOf(es []Entry) []string {
	keys := make([]string, len(es))
	for i, e := range es {
		keys[i] = e.Key
	}
	return keys
}

// ObjectInfo is what a HEAD tells.
type ObjectInfo struct {
	Size int64
	ETag string
}

// notFound builds the "missing key" failure. It lists the keys nearest to
// the wanted one under its folder (or the path prefix, or the bucket), so a
// typo shows at once what is there.
func notFound(ctx context.Context, src Source, key, pathPrefix string) error {
	var near []string
	dir := path.Dir(key)
	prefixes := []string{}
	if dir != "." {
		prefixes = append(prefixes, dir+"/")
	}
	if pathPrefix != "" {
		prefixes = append(prefixes, strings.TrimSuffix(pathPrefix, "/")+"/")
	}
	prefixes = append(prefixes, "")
	searched := ""
	for _, p := range prefixes {
		es, err := src.List(ctx, p, 1000)
		if err != nil {
			break // listing is a courtesy: a refused list must not hide the real error
		}
		keys := keysOf(es)
		searched = p
		if len(keys) > 0 {
			near = nearest(key, keys, 5)
			break
		}
	}
	where := src.URL(searched)
	if len(near) == 0 {
		return fail(schemas.ExitSnapshot, nil, "snapshot %s not found, and nothing is stored under %s", src.URL(key), where)
	}
	return fail(schemas.ExitSnapshot, nil, "snapshot %s not found; nearest keys under %s: %s", src.URL(key), where, strings.Join(near, ", "))
}

// nearest ranks keys by edit distance to want, then by name, newest-looking
// names last among equals so a timestamped series reads in order.
func nearest(want string, keys []string, n int) []string {
	type kd struct {
		k string
		d int
	}
	all := make([]kd, 0, len(keys))
	for _, k := range keys {
		all = append(all, kd{k, levenshtein(want, k)})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].d != all[j].d {
			return all[i].d < all[j].d
		}
		return all[i].k < all[j].k
	})
	out := []string{}
	for i := 0; i < len(all) && i < n; i++ {
		out = append(out, all[i].k)
	}
	return out
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func atoi(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }

// checkSize applies the size rules of a snapshot object before any transfer.
func checkSize(url string, size, pinned int64) error {
	switch {
	case size <= 0:
		return fail(schemas.ExitSnapshot, nil, "snapshot %s is empty", url)
	case size > schemas.MaxSnapshotSize:
		return fail(schemas.ExitSnapshot, nil, "snapshot %s has %d bytes, more than the %d allowed", url, size, int64(schemas.MaxSnapshotSize))
	case pinned > 0 && size != pinned:
		return fail(schemas.ExitVerification, nil, "snapshot %s has %d bytes, but %s pins %d", url, size, schemas.EnvExpectedSize, pinned)
	}
	return nil
}

func newSource(ctx context.Context, cfg *Config) (Source, error) {
	switch cfg.Provider {
	case "s3":
		return newS3Source(ctx, cfg)
	case "gcs":
		return newGCSSource(ctx, cfg)
	case "azure":
		return newAzureSource(ctx, cfg)
	default:
		return nil, fail(schemas.ExitConfig, nil, "%s=%s is not supported by this executor yet", schemas.EnvProvider, cfg.Provider)
	}
}
