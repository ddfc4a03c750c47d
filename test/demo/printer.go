package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// printer writes the story: a line per step with the time since the
// start. On a terminal a spinner line shows that something is under way
// between steps; piped, there are only the plain lines. The harness's own
// lines are printed only with --verbose.
type printer struct {
	mu      sync.Mutex
	w       io.Writer
	verbose bool
	start   time.Time
	tty     bool
	spin    string // the spinner line now shown, "" if none
	done    chan struct{}
	once    sync.Once
}

func newPrinter(w io.Writer, verbose bool) *printer {
	p := &printer{w: w, verbose: verbose, start: time.Now(), done: make(chan struct{})}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
			go p.spinner()
		}
	}
	return p
}

// storyPrefix marks the harness's lines that tell the story.
const storyPrefix = "e2e: "

// line takes one line the harness logged: a story line, or chatter.
func (p *printer) line(s string) {
	if rest, ok := strings.CutPrefix(s, storyPrefix); ok {
		// A block (the events of the restore, the executor's log
		// header) is chatter the steps already told: its first line only.
		if first, more, ok := strings.Cut(rest, "\n"); ok && !p.verbose {
			rest = fmt.Sprintf("%s (%d lines: --verbose shows them)", strings.TrimSuffix(first, ":"), strings.Count(more, "\n")+1)
		}
		if !strings.HasPrefix(rest, "executor: ====") || p.verbose {
			p.story(rest)
		}
		return
	}
	if p.verbose {
		p.print("        | " + strings.ReplaceAll(s, "\n", "\n        | "))
	}
}

// story prints a step of the story.
func (p *printer) story(s string) {
	at := time.Since(p.start).Seconds()
	p.print(fmt.Sprintf("[%6.1fs] %s", at, strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n          ")))
}

func (p *printer) print(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spin != "" {
		fmt.Fprint(p.w, "\r\033[K")
		p.spin = ""
	}
	fmt.Fprintln(p.w, s)
}

// harness is where the harness's raw output goes: the story's writer with
// --verbose, nowhere otherwise.
func (p *printer) harness() io.Writer {
	if p.verbose {
		return writerFunc(func(b []byte) (int, error) { p.line(string(b)); return len(b), nil })
	}
	return io.Discard
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (p *printer) spinner() {
	frames := []string{"|", "/", "-", "\\"}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
		p.mu.Lock()
		p.spin = fmt.Sprintf("%s %.1fs", frames[i%len(frames)], time.Since(p.start).Seconds())
		fmt.Fprint(p.w, "\r\033[K"+p.spin)
		p.mu.Unlock()
	}
}

// stop ends the spinner and clears its line.
func (p *printer) stop() {
	p.once.Do(func() {
		close(p.done)
		p.mu.Lock()
		if p.spin != "" {
			fmt.Fprint(p.w, "\r\033[K")
			p.spin = ""
		}
		p.mu.Unlock()
	})
}
