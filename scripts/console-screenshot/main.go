// Command console-screenshot signs in to a running switchyard operator
// console with headless chromium and saves a PNG of the page: the picture in
// the README and docs/operators.md is made with it.
//
//	go run ./scripts/console-screenshot --url http://127.0.0.1:9465/ --token-file /tmp/token --out docs/img/console.png
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "console-screenshot:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("console-screenshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:9465/", "console URL")
	tokenFile := fs.String("token-file", "", "file holding the admin token (required)")
	out := fs.String("out", "console.png", "PNG to write")
	width := fs.Int("width", 1280, "window width")
	height := fs.Int("height", 800, "window height")
	chromium := fs.String("chromium", "chromium", "chromium binary")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	busy := fs.Bool("wait-busy", false, "wait until some pool has calls in flight (a moment of a load test)")
	after := fs.Duration("after", 0, "keep the page open this long after signing in before the picture (events that happen meanwhile show)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tokenFile == "" {
		return errors.New("--token-file is required")
	}
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		return err
	}
	path, err := exec.LookPath(*chromium)
	if err != nil {
		return fmt.Errorf("%s: %w (apt-get install chromium)", *chromium, err)
	}
	dir, err := os.MkdirTemp("", "console-screenshot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(dir), chromedp.WindowSize(*width, *height))...)
	defer cancelAlloc()
	tctx, cancelTab := chromedp.NewContext(actx)
	defer cancelTab()

	if err := chromedp.Do(tctx,
		chromedp.EmulateViewport(int64(*width), int64(*height)),
		chromedp.Navigate(*url),
		chromedp.WaitVisible("#token"),
		chromedp.SendKeys("#token", strings.TrimSpace(string(tok))+"\r"),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll('#fleet-body tr[data-pool]').length > 0 && document.querySelector('#live').textContent === 'live'`),
		// Let the first live sample and fleet update land.
		chromedp.Poll[chromedp.Void](`document.querySelectorAll('#chart-regions polyline').length > 0`),
	); err != nil {
		return fmt.Errorf("sign in at %s: %w", *url, err)
	}
	select {
	case <-time.After(*after):
	case <-tctx.Done():
		return tctx.Err()
	}
	if *busy {
		if err := chromedp.Do(tctx, chromedp.Poll[chromedp.Void](`[...document.querySelectorAll('#fleet-body .load .num')].some(e => !e.textContent.startsWith('0 /'))`,
			chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
			return fmt.Errorf("no pool had calls in flight: %w", err)
		}
	}
	png, err := chromedp.Run(tctx, chromedp.CaptureScreenshot())
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, png, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes)\n", *out, len(png))
	return nil
}
