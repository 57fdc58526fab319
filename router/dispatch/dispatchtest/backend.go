package dispatchtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Backend is one pool's scripted backend: it plays its steps in order, the
// last one again once they run out, and remembers what each attempt was
// asked to continue. It speaks the core's terms (dispatch.Usage,
// *dispatch.BackendError) where the router's adapters speak their wire.
type Backend struct {
	name      string
	steps     []Step
	continues bool
	offers    dispatch.Features
	prompt    int32
	cached    int32
	load      func() (policy.Reported, time.Time, bool)

	mu      sync.Mutex
	resumes []*dispatch.Resume // one per attempt; nil: not a continuation
}

// Calls is how many attempts the backend was sent.
func (b *Backend) Calls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.resumes)
}

// Resumes is what each attempt was asked to continue (nil: nothing).
func (b *Backend) Resumes() []*dispatch.Resume {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*dispatch.Resume(nil), b.resumes...)
}

// LastResume is what the last attempt was asked to continue (nil: nothing,
// or no attempt).
func (b *Backend) LastResume() *dispatch.Resume {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.resumes) == 0 {
		return nil
	}
	return b.resumes[len(b.resumes)-1]
}

func (b *Backend) next(resume *dispatch.Resume) Step {
	b.mu.Lock()
	defer b.mu.Unlock()
	if resume != nil {
		r := *resume
		resume = &r
	}
	b.resumes = append(b.resumes, resume)
	return b.steps[min(len(b.resumes), len(b.steps))-1]
}

// input is the input its server reports for an attempt continuing resume.
func (b *Backend) input(resume *dispatch.Resume) int32 {
	if b.prompt == 0 {
		return 0
	}
	if resume != nil {
		return b.prompt + resume.Tokens
	}
	return b.prompt
}

// failure is the backend error of a failing step.
func (b *Backend) failure(c dispatch.Code) error {
	return &dispatch.BackendError{Code: c, Err: fmt.Errorf("%s: injected %s", b.name, c)}
}

// hung is the backend error of an attempt whose context ended: a copy of
// the context's end in the backend's words, as a remote server answers
// (it does not wrap the context's error).
func (b *Backend) hung(ctx context.Context) error {
	c := dispatch.CodeCanceled
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		c = dispatch.CodeDeadlineExceeded
	}
	return &dispatch.BackendError{Code: c, Err: fmt.Errorf("%s: %v", b.name, ctx.Err())}
}

// unary is one unary attempt: the answer's text and usage, or an error.
func (b *Backend) unary(ctx context.Context, resume *dispatch.Resume) (string, dispatch.Usage, error) {
	s := b.next(resume)
	switch {
	case s.Panic:
		panic("dispatchtest: backend " + b.name + " panicked")
	case s.Hang:
		<-ctx.Done()
		return "", dispatch.Usage{}, b.hung(ctx)
	case s.Fail != dispatch.CodeOK:
		return "", dispatch.Usage{}, b.failure(s.Fail)
	}
	var t strings.Builder
	for i := range s.Tokens {
		t.WriteString(Text(b.name, i))
	}
	return t.String(), dispatch.Usage{InputTokens: b.input(resume), OutputTokens: s.Tokens, CachedInputTokens: b.cached}, nil
}

// stream is one streamed attempt: each token reaches the client (stream)
// as its own chunk, then the step ends it. As the router's wiring does, a
// failed attempt reports the client's input estimate and the tokens it
// delivered, a finished one its server's counts.
func (b *Backend) stream(ctx context.Context, req *dispatch.Request, st *dispatch.Stream, resume *dispatch.Resume, started func(), tools *int) (dispatch.Usage, error) {
	s := b.next(resume)
	if s.Panic {
		panic("dispatchtest: backend " + b.name + " panicked")
	}
	before := st.Tokens()
	for i := range s.Tokens {
		if started != nil {
			started()
		}
		if s.Tool {
			// A piece of a tool call: arguments, no text.
			st.Delivered("", 1, true)
			*tools++
			continue
		}
		st.Delivered(Text(b.name, i), 1, false)
	}
	var err error
	switch {
	case s.Hang:
		<-ctx.Done()
		err = b.hung(ctx)
	case s.Fail != dispatch.CodeOK:
		err = b.failure(s.Fail)
	}
	if err != nil {
		return dispatch.Usage{InputTokens: int32(req.InputTokens), OutputTokens: st.Tokens() - before}, err
	}
	if started != nil {
		started() // the final chunk
	}
	return dispatch.Usage{InputTokens: b.input(resume), OutputTokens: s.Tokens, CachedInputTokens: b.cached}, nil
}
