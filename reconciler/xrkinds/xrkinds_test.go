package xrkinds

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/openbao-restore/openbao-restore/schemas"
)

func mapper(gvks ...schema.GroupVersionKind) meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	for _, g := range gvks {
		m.Add(g, meta.RESTScopeNamespace)
	}
	return m
}

func TestEach(t *testing.T) {
	var got []schema.GroupVersionKind
	record := func(g schema.GroupVersionKind) error { got = append(got, g); return nil }

	// Both served: each set up once, and Each returns.
	if err := Each(context.Background(), mapper(schemas.XRs...), schemas.XRs, record); err != nil || !slices.Equal(got, schemas.XRs) {
		t.Fatalf("both served: err %v, set up %v", err, got)
	}

	// One not served: the other is set up at once; Each waits for the
	// missing one until the context ends, and ends without an error.
	got = nil
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := Each(ctx, mapper(schemas.NamespacedXR), schemas.XRs, record); err != nil || !slices.Equal(got, []schema.GroupVersionKind{schemas.NamespacedXR}) {
		t.Fatalf("one served: err %v, set up %v", err, got)
	}

	// A setup that fails stops Each with its error.
	boom := errors.New("boom")
	if err := Each(context.Background(), mapper(schemas.XRs...), schemas.XRs, func(schema.GroupVersionKind) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failing setup: err %v", err)
	}
}
