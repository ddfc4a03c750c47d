package executor

import (
	"hash"
	"io"
	"sync"
)

// prefetch reads the source ahead of its reader and hashes it, in two
// goroutines of their own: one reads the object store, the other hashes
// what has been read, while the reader (the HTTP transport) writes what has
// been hashed. SHA-256 is the costliest stage and cannot be split, so it
// gets a goroutine that does nothing else; on a 2-core machine the reads
// and writes then run beside it instead of one after the other. Memory is
// bounded by the chunk pool, whatever the object's size.
type prefetch struct {
	ch     chan chunk // hashed chunks, in order, for Read
	free   chan []byte
	done   chan struct{}
	once   sync.Once
	cur    []byte
	curBuf []byte
	err    error
}

type chunk struct {
	b   []byte
	err error
}

const (
	prefetchChunk = 256 << 10
	// prefetchChunks is the pool: one being read, one being hashed, one
	// being sent, the rest queued between the stages.
	prefetchChunks = 8
)

func newPrefetch(src io.Reader, h hash.Hash) *prefetch {
	p := &prefetch{ch: make(chan chunk, prefetchChunks), free: make(chan []byte, prefetchChunks), done: make(chan struct{})}
	for range prefetchChunks {
		p.free <- make([]byte, prefetchChunk)
	}
	read := make(chan chunk, prefetchChunks)
	go p.readLoop(src, read)
	go p.hashLoop(read, h)
	return p
}

// readLoop fills free chunks from the source, in order; an error (io.EOF
// at the end) is passed on after the data read before it.
func (p *prefetch) readLoop(src io.Reader, out chan<- chunk) {
	for {
		var buf []byte
		select {
		case buf = <-p.free:
		case <-p.done:
			return
		}
		n, err := fill(src, buf)
		if n > 0 {
			select {
			case out <- chunk{b: buf[:n]}:
			case <-p.done:
				return
			}
		} else {
			p.free <- buf
		}
		if err != nil {
			select {
			case out <- chunk{err: err}:
			case <-p.done:
			}
			return
		}
	}
}

// fill reads into buf until it is full or the source fails, and returns
// the source's own error. Not io.ReadFull: it reports a source that ends
// mid-buffer as io.ErrUnexpectedEOF, the very error an HTTP body gives when
// the store closes the connection before Content-Length bytes. Telling the
// two apart is the point: a clean early EOF is an object shorter than its
// HEAD said (permanent), a cut body is a network failure (retried).
func fill(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := src.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// hashLoop hashes each chunk before it hands it on: by the time Read
// returns the source's EOF, the hash covers every byte.
func (p *prefetch) hashLoop(in <-chan chunk, h hash.Hash) {
	for {
		var c chunk
		select {
		case c = <-in:
		case <-p.done:
			return
		}
		if len(c.b) > 0 {
			h.Write(c.b)
		}
		select {
		case p.ch <- c:
		case <-p.done:
			return
		}
		if c.err != nil {
			return
		}
	}
}

func (p *prefetch) Read(b []byte) (int, error) {
	if len(p.cur) == 0 {
		if p.curBuf != nil {
			p.free <- p.curBuf[:cap(p.curBuf)]
			p.curBuf = nil
		}
		if p.err != nil {
			return 0, p.err
		}
		c := <-p.ch
		if c.err != nil {
			p.err = c.err
			return 0, c.err
		}
		p.cur, p.curBuf = c.b, c.b
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// Close stops the goroutines. A goroutine blocked in the source's Read ends
// when the caller closes the source.
func (p *prefetch) Close() { p.once.Do(func() { close(p.done) }) }
