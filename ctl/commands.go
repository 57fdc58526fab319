package ctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// cmdFlags holds every command's own flags; each command registers the ones
// it takes.
type cmdFlags struct {
	dryRun, force bool
	forDur        time.Duration
	until         string
	limit         int
	model         string
	region        string
	residency     string
	priority      string
	cloud         string
	accelerator   string
}

// command is one switchyardctl subcommand.
type command struct {
	name    string // one or two words, e.g. "weight set"
	args    string // positional synopsis, e.g. "POOL WEIGHT"
	opts    string // flag synopsis, e.g. "[--dry-run] [--force]"
	summary string
	help    string
	minArgs int
	maxArgs int
	flags   func(*flag.FlagSet, *cmdFlags)
	run     func(context.Context, *cli, []string, *cmdFlags) error
}

func (c *command) synopsis() string {
	s := "switchyardctl " + c.name
	for _, part := range []string{c.args, c.opts} {
		if part != "" {
			s += " " + part
		}
	}
	return s
}

func (c *command) checkArgs(pos []string) error {
	if len(pos) < c.minArgs || len(pos) > c.maxArgs {
		switch {
		case c.maxArgs == 0:
			return usagef(c.synopsis(), "%s takes no arguments, got %q", c.name, strings.Join(pos, " "))
		case len(pos) < c.minArgs:
			return usagef(c.synopsis(), "%s: missing %s", c.name, c.args)
		default:
			return usagef(c.synopsis(), "%s: unexpected arguments %q", c.name, strings.Join(pos[c.maxArgs:], " "))
		}
	}
	return nil
}

const explainOpts = "--model M [--region R] [--residency eu|us] [--priority interactive|standard|batch] [--cloud C] [--accelerator A]"

var commands = []*command{
	{name: "pools", summary: "list pools: capacity, in flight, headroom, weight, state, cost",
		help: "The header shows the replica answering, the routing policy and the counting mode.", run: runPools},
	{name: "weight set", args: "POOL WEIGHT", summary: "set a pool's routing weight (1 is neutral)",
		help: "WEIGHT is a number in [0, 1000]; 1 is neutral.", minArgs: 2, maxArgs: 2, run: runWeightSet},
	{name: "drain", args: "POOL", opts: "[--dry-run] [--force]", summary: "stop sending a pool new traffic (in-flight calls finish)",
		help: "With --dry-run nothing changes: it prints where the pool's traffic would go per model and whether\n" +
			"the rest of the fleet has the headroom. A drain the fleet lacks headroom for is refused without --force.",
		minArgs: 1, maxArgs: 1, run: runDrain, flags: func(fs *flag.FlagSet, f *cmdFlags) {
			fs.BoolVar(&f.dryRun, "dry-run", false, "only report what a drain would do")
			fs.BoolVar(&f.force, "force", false, "drain even when the rest of the fleet lacks headroom")
		}},
	{name: "resume", args: "POOL", summary: "undo a drain", minArgs: 1, maxArgs: 1, run: runResume},
	{name: "capacity set", args: "POOL LIMIT", opts: "[--for 30m | --until RFC3339]", summary: "override a pool's max concurrent requests (e.g. it lost chips)",
		help:    "The override lasts until 'capacity clear', or until --for / --until when given.",
		minArgs: 2, maxArgs: 2, run: runCapacitySet, flags: func(fs *flag.FlagSet, f *cmdFlags) {
			fs.DurationVar(&f.forDur, "for", 0, "the override expires after this long, e.g. 30m")
			fs.StringVar(&f.until, "until", "", "the override expires at this time (RFC 3339)")
		}},
	{name: "capacity clear", args: "POOL", summary: "remove a capacity override", minArgs: 1, maxArgs: 1, run: runCapacityClear},
	{name: "policy set", args: "NAME", summary: "switch the routing policy (switchyard, round_robin, random, least_request, gie, envoy_locality)",
		minArgs: 1, maxArgs: 1, run: runPolicySet},
	{name: "explain", opts: explainOpts, summary: "rank the pools a request would go to, and say why others are skipped",
		help: "Nothing is sent to any pool.", run: runExplain, flags: func(fs *flag.FlagSet, f *cmdFlags) {
			fs.StringVar(&f.model, "model", "", "model (required)")
			fs.StringVar(&f.region, "region", "", "the caller's region, e.g. us-east-1")
			fs.StringVar(&f.residency, "residency", "", "data residency: eu or us")
			fs.StringVar(&f.priority, "priority", "", "interactive, standard or batch")
			fs.StringVar(&f.cloud, "cloud", "", "preferred cloud: aws, gcp or azure")
			fs.StringVar(&f.accelerator, "accelerator", "", "preferred accelerator, e.g. h100")
		}},
	{name: "watch", summary: "stream changes and ejections until interrupted", run: runWatch},
	{name: "audit", opts: "[--limit N]", summary: "list recorded operator changes, newest first", run: runAudit,
		flags: func(fs *flag.FlagSet, f *cmdFlags) {
			fs.IntVar(&f.limit, "limit", 20, "entries to show (at most 1000)")
		}},
	{name: "token hash", args: "[TOKEN|-]", summary: "print the hex SHA-256 of a token for the config's admin.tokens (no router needed)",
		help:    "Without TOKEN, or with -, the token is read from standard input (keeps it out of shell history).",
		maxArgs: 1, run: runTokenHash},
}

// lookup finds the command named by the first one or two words of args.
func lookup(args []string) (*command, []string, error) {
	var groups, syns []string
	for _, c := range commands {
		group, sub, two := strings.Cut(c.name, " ")
		if !two {
			if c.name == args[0] {
				return c, args[1:], nil
			}
			continue
		}
		if group != args[0] {
			continue
		}
		groups, syns = append(groups, c.name), append(syns, c.synopsis())
		if len(args) > 1 && args[1] == sub {
			return c, args[2:], nil
		}
	}
	if len(groups) > 0 {
		return nil, nil, usagef(strings.Join(syns, "\n       "), "%s: want one of: %s", args[0], strings.Join(groups, ", "))
	}
	return nil, nil, usagef("switchyardctl [flags] COMMAND [args]", "unknown command %q", args[0])
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "switchyardctl operates a switchyard router through its Admin API.")
	fmt.Fprintln(w, "\nusage: switchyardctl [flags] COMMAND [args] [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %s\n      %s\n", strings.TrimPrefix(c.synopsis(), "switchyardctl "), c.summary)
	}
	fmt.Fprintf(w, "\nflags (before or after the command):\n")
	var g globals
	g.defaults()
	fs := flag.NewFlagSet("switchyardctl", flag.ContinueOnError)
	fs.SetOutput(w)
	g.register(fs)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nThe bearer token comes from --token-file or $%s. 'switchyardctl COMMAND -h' shows a command's flags.\n", tokenEnv)
}

func runPools(ctx context.Context, c *cli, _ []string, _ *cmdFlags) error {
	resp, err := call(ctx, c, pb.AdminClient.ListPools, &pb.ListPoolsRequest{})
	if err != nil {
		return err
	}
	if resp.GetCountingMode() == pb.CountingMode_COUNTING_MODE_DEGRADED {
		fmt.Fprintf(c.stderr, "WARNING: replica %s counts capacity DEGRADED: Redis is unreachable, so each replica admits only a conservative local share of every limit\n", resp.GetReplica())
	}
	if c.g.json {
		return c.printJSON(resp, false)
	}
	fmt.Fprintf(c.stdout, "replica %s  policy %s  counting %s\n", resp.GetReplica(), resp.GetPolicy(), describeMode(resp.GetCountingMode()))
	if resp.GetAcquires() > 0 || resp.GetStoreRoundTrips() > 0 {
		fmt.Fprintf(c.stdout, "leased blocks: %d acquires, %d store round trips (%d on the request path), %.3f per call\n",
			resp.GetAcquires(), resp.GetStoreRoundTrips(), resp.GetSyncRoundTrips(), float64(resp.GetStoreRoundTrips())/float64(max(resp.GetAcquires(), 1)))
	}
	t := newTable(c.stdout, "NAME", "CLOUD", "REGION", "ACCEL", "MODELS", "LIMIT", "INFLIGHT", "HEADROOM", "WEIGHT", "STATE", "COST", "BLOCK")
	now := time.Now()
	for _, p := range resp.GetPools() {
		t.row(p.GetName(), p.GetCloud(), p.GetRegion(), p.GetAccelerator(), strings.Join(p.GetModels(), ","),
			p.GetLimit(), p.GetInFlight(), p.GetHeadroom(), fmtWeight(p.GetWeight()), poolState(p, now),
			fmt.Sprintf("$%.2f/M", p.GetCostPerMillionTokens()), fmtBlock(p.GetBlock()))
	}
	return t.flush()
}

// fmtBlock is the BLOCK column: this replica's leased block of the pool
// ("8 (3 free, 2 stranded) @us"), or "-" without leased counting.
func fmtBlock(b *pb.CapacityBlock) string {
	if b == nil {
		return "-"
	}
	s := fmt.Sprintf("%d (%d free", b.GetGranted(), b.GetFree())
	if b.GetStranded() > 0 {
		s += fmt.Sprintf(", %d stranded", b.GetStranded())
	}
	s += ")@" + b.GetHome()
	if b.GetLearning() {
		s += " learning"
	}
	return s
}

func describeMode(m pb.CountingMode) string {
	switch m {
	case pb.CountingMode_COUNTING_MODE_LOCAL:
		return "local (in-memory: this replica alone)"
	case pb.CountingMode_COUNTING_MODE_SHARED:
		return "shared (Redis: every replica; leased blocks or one reservation per call)"
	case pb.CountingMode_COUNTING_MODE_DEGRADED:
		return "DEGRADED (Redis unreachable: conservative local share of each limit)"
	}
	return "unknown"
}

// poolState is the STATE column: ok, or every condition that applies.
func poolState(p *pb.PoolStatus, now time.Time) string {
	var s []string
	if p.GetDrained() {
		s = append(s, "drained")
	}
	if p.GetEjected() {
		s = append(s, "ejected")
	}
	if p.GetHealth() == "NOT_SERVING" {
		s = append(s, "unhealthy")
	}
	if o := overrideText(p, now); o != "" {
		s = append(s, o)
	}
	if r := p.GetLimitReason(); strings.HasPrefix(r, "short:") {
		s = append(s, r) // "short: backend reports 2 of 64"
	}
	if len(s) == 0 {
		return "ok"
	}
	return strings.Join(s, ",")
}

// overrideText describes an active capacity override ("" when none).
func overrideText(p *pb.PoolStatus, now time.Time) string {
	if p.GetCapacityOverride() == 0 && p.GetOverrideExpires() == nil && !strings.HasPrefix(p.GetLimitReason(), "override") {
		return ""
	}
	s := fmt.Sprintf("override %d", p.GetCapacityOverride())
	if e := p.GetOverrideExpires(); e != nil {
		s += fmt.Sprintf(" (%s left)", fmtLeft(e.AsTime().Sub(now)))
	}
	return s
}

// fmtLeft formats a remaining duration compactly: 30m, 1h5m, 42s.
func fmtLeft(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	}
	s := d.Round(time.Minute).String()
	s = strings.TrimSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// poolLine summarises one pool after a change.
func poolLine(p *pb.PoolStatus) string {
	limit := fmt.Sprintf("limit %d", p.GetLimit())
	if p.GetLimit() != p.GetConfiguredLimit() {
		limit += fmt.Sprintf(" (configured %d)", p.GetConfiguredLimit())
	}
	return fmt.Sprintf("%s: %s, in flight %d, headroom %d, weight %s, state %s", p.GetName(), limit, p.GetInFlight(),
		p.GetHeadroom(), fmtWeight(p.GetWeight()), poolState(p, time.Now()))
}

func fmtWeight(w float64) string { return strconv.FormatFloat(w, 'g', -1, 64) }

func (c *cli) printPool(verb string, resp *pb.PoolChangeResponse) error {
	if c.g.json {
		return c.printJSON(resp, false)
	}
	_, err := fmt.Fprintf(c.stdout, "%s %s\n", verb, poolLine(resp.GetPool()))
	return err
}

func runWeightSet(ctx context.Context, c *cli, pos []string, _ *cmdFlags) error {
	w, err := strconv.ParseFloat(pos[1], 64)
	if err != nil {
		return usagef("switchyardctl weight set POOL WEIGHT", "weight set: WEIGHT %q is not a number", pos[1])
	}
	resp, err := call(ctx, c, pb.AdminClient.SetWeight, &pb.SetWeightRequest{Pool: pos[0], Weight: w})
	if err != nil {
		return err
	}
	return c.printPool("weight set:", resp)
}

func runDrain(ctx context.Context, c *cli, pos []string, f *cmdFlags) error {
	resp, err := call(ctx, c, pb.AdminClient.Drain, &pb.DrainRequest{Pool: pos[0], DryRun: f.dryRun, Force: f.force})
	if err != nil {
		if status.Code(err) == codes.FailedPrecondition {
			return fmt.Errorf("%w (run 'switchyardctl drain %s --dry-run' to see the plan, --force to drain anyway)", err, pos[0])
		}
		return err
	}
	if c.g.json {
		return c.printJSON(resp, false)
	}
	p := resp.GetPool()
	if f.dryRun {
		fmt.Fprintf(c.stdout, "dry run: draining %s (%d in flight) would send its new traffic to:\n", p.GetName(), p.GetInFlight())
	} else {
		fmt.Fprintf(c.stdout, "drained %s; its new traffic goes to:\n", p.GetName())
	}
	t := newTable(c.stdout, "MODEL", "POOLS", "HEADROOM")
	for _, tg := range resp.GetTargets() {
		pools := strings.Join(tg.GetPools(), ",")
		if pools == "" {
			pools = "(none)"
		}
		t.row(tg.GetModel(), pools, tg.GetHeadroom())
	}
	if err := t.flush(); err != nil {
		return err
	}
	verdict := "yes"
	if !resp.GetFleetHasHeadroom() {
		verdict = "NO"
	}
	fmt.Fprintf(c.stdout, "fleet has headroom: %s: %s\n", verdict, resp.GetSummary())
	if f.dryRun {
		_, err = fmt.Fprintln(c.stdout, "nothing changed (dry run)")
		return err
	}
	_, err = fmt.Fprintln(c.stdout, poolLine(p))
	return err
}

func runResume(ctx context.Context, c *cli, pos []string, _ *cmdFlags) error {
	resp, err := call(ctx, c, pb.AdminClient.Resume, &pb.ResumeRequest{Pool: pos[0]})
	if err != nil {
		return err
	}
	return c.printPool("resumed", resp)
}

func runCapacitySet(ctx context.Context, c *cli, pos []string, f *cmdFlags) error {
	const syn = "switchyardctl capacity set POOL LIMIT [--for 30m | --until RFC3339]"
	limit, err := strconv.ParseInt(pos[1], 10, 32)
	if err != nil || limit < 0 {
		return usagef(syn, "capacity set: LIMIT %q is not a non-negative whole number", pos[1])
	}
	req := &pb.SetCapacityOverrideRequest{Pool: pos[0], Limit: int32(limit)}
	switch {
	case f.forDur != 0 && f.until != "":
		return usagef(syn, "capacity set: --for and --until are exclusive")
	case f.forDur < 0:
		return usagef(syn, "capacity set: --for must be positive, got %s", f.forDur)
	case f.forDur > 0:
		req.Expires = timestamppb.New(time.Now().Add(f.forDur))
	case f.until != "":
		t, err := time.Parse(time.RFC3339, f.until)
		if err != nil {
			return usagef(syn, "capacity set: --until %q is not an RFC 3339 time (e.g. 2030-01-02T15:04:05Z)", f.until)
		}
		req.Expires = timestamppb.New(t)
	}
	resp, err := call(ctx, c, pb.AdminClient.SetCapacityOverride, req)
	if err != nil {
		return err
	}
	return c.printPool("capacity set:", resp)
}

func runCapacityClear(ctx context.Context, c *cli, pos []string, _ *cmdFlags) error {
	resp, err := call(ctx, c, pb.AdminClient.SetCapacityOverride, &pb.SetCapacityOverrideRequest{Pool: pos[0], Clear: true})
	if err != nil {
		return err
	}
	return c.printPool("capacity cleared:", resp)
}

func runPolicySet(ctx context.Context, c *cli, pos []string, _ *cmdFlags) error {
	resp, err := call(ctx, c, pb.AdminClient.SetPolicy, &pb.SetPolicyRequest{Policy: pos[0]})
	if err != nil {
		return err
	}
	if c.g.json {
		return c.printJSON(resp, false)
	}
	_, err = fmt.Fprintf(c.stdout, "policy %s -> %s\n", resp.GetPrevious(), resp.GetPolicy())
	return err
}

func runExplain(ctx context.Context, c *cli, _ []string, f *cmdFlags) error {
	const syn = "switchyardctl explain " + explainOpts
	if f.model == "" {
		return usagef(syn, "explain: --model is required")
	}
	prio := pb.Priority_PRIORITY_UNSPECIFIED
	if f.priority != "" {
		p, ok := priority.Parse(f.priority)
		if !ok {
			return usagef(syn, "explain: --priority %q: want interactive, standard or batch", f.priority)
		}
		prio = pb.Priority(p.Wire())
	}
	req := &pb.ExplainRouteRequest{Request: &pb.GenerateRequest{Model: f.model, Priority: prio, Routing: &pb.RoutingHints{
		CallerRegion: f.region, Residency: f.residency, PreferredCloud: f.cloud, PreferredAccelerator: f.accelerator}}}
	resp, err := call(ctx, c, pb.AdminClient.ExplainRoute, req)
	if err != nil {
		return err
	}
	if c.g.json {
		return c.printJSON(resp, false)
	}
	var ranked, skipped []*pb.Candidate
	for _, cand := range resp.GetCandidates() {
		if cand.GetRank() > 0 {
			ranked = append(ranked, cand)
		} else {
			skipped = append(skipped, cand)
		}
	}
	fmt.Fprintf(c.stdout, "policy %s: %d eligible, %d skipped\n", resp.GetPolicy(), len(ranked), len(skipped))
	if len(ranked) == 0 {
		fmt.Fprintln(c.stdout, "no eligible pool: this request would be refused")
	} else {
		t := newTable(c.stdout, "RANK", "POOL", "TIER", "HEADROOM", "WEIGHT", "SCORE", "REASON")
		for _, cand := range ranked {
			t.row(cand.GetRank(), cand.GetPool(), cand.GetTier(), cand.GetHeadroom(), fmtWeight(cand.GetWeight()),
				strconv.FormatFloat(cand.GetScore(), 'f', 3, 64), cand.GetReason())
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(skipped) == 0 {
		return nil
	}
	fmt.Fprintln(c.stdout)
	t := newTable(c.stdout, "SKIPPED", "TIER", "HEADROOM", "REASON")
	for _, cand := range skipped {
		t.row(cand.GetPool(), cand.GetTier(), cand.GetHeadroom(), cand.GetReason())
	}
	return t.flush()
}

// runWatch streams events until ctx ends. The first event (the server's
// hello) must arrive within --timeout; after that the stream has no deadline.
func runWatch(ctx context.Context, c *cli, _ []string, _ *cmdFlags) error {
	if err := c.connect(); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(c.authed(ctx))
	defer cancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(c.g.timeout, func() { timedOut.Store(true); cancel() })
	defer timer.Stop()
	stream, err := c.admin.WatchEvents(sctx, &pb.WatchEventsRequest{})
	first := true
	for err == nil {
		var ev *pb.Event
		ev, err = stream.Recv()
		if err != nil {
			break
		}
		if first {
			first = false
			if !timer.Stop() && timedOut.Load() {
				break
			}
		}
		if err = c.printEvent(ev); err != nil {
			return err
		}
	}
	switch {
	case ctx.Err() != nil:
		return nil // interrupted: the normal way to stop watching
	case timedOut.Load() && first:
		return c.rpcError(status.Error(codes.DeadlineExceeded, "no event within the timeout"))
	case errors.Is(err, io.EOF):
		return errors.New("watch ended: the router closed the stream")
	case !first && status.Code(err) == codes.Unavailable:
		return fmt.Errorf("watch ended: %s", status.Convert(err).Message())
	}
	return c.rpcError(err)
}

func (c *cli) printEvent(ev *pb.Event) error {
	if c.g.json {
		return c.printJSON(ev, true)
	}
	detail := ev.GetDetail()
	if a := ev.GetActor(); a != "" {
		detail += " (by " + a + ")"
	}
	_, err := fmt.Fprintf(c.stdout, "%s  %-17s %-20s %s\n", fmtTime(ev.GetTime()), ev.GetKind(), dash(ev.GetPool()), detail)
	if err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func runAudit(ctx context.Context, c *cli, _ []string, f *cmdFlags) error {
	if f.limit <= 0 || f.limit > 1000 {
		return usagef("switchyardctl audit [--limit N]", "audit: --limit must be in [1, 1000], got %d", f.limit)
	}
	resp, err := call(ctx, c, pb.AdminClient.ListAudit, &pb.ListAuditRequest{Limit: int32(f.limit)})
	if err != nil {
		return err
	}
	if c.g.json {
		return c.printJSON(resp, false)
	}
	if len(resp.GetEntries()) == 0 {
		_, err := fmt.Fprintln(c.stdout, "no changes recorded")
		return err
	}
	t := newTable(c.stdout, "TIME", "ACTOR", "ACTION", "POOL", "BEFORE", "AFTER")
	for _, e := range resp.GetEntries() {
		t.row(fmtTime(e.GetTime()), e.GetActor(), e.GetAction(), dash(e.GetPool()), e.GetBefore(), e.GetAfter())
	}
	return t.flush()
}

func runTokenHash(_ context.Context, c *cli, pos []string, _ *cmdFlags) error {
	var tok string
	if len(pos) == 1 && pos[0] != "-" {
		tok = pos[0]
	} else {
		b, err := io.ReadAll(io.LimitReader(c.env.stdin, 1<<20))
		if err != nil {
			return fmt.Errorf("read token from stdin: %w", err)
		}
		tok = string(b)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return errors.New("token hash: the token is empty")
	}
	sum := sha256.Sum256([]byte(tok))
	_, err := fmt.Fprintln(c.stdout, hex.EncodeToString(sum[:]))
	return err
}

func fmtTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format("2006-01-02T15:04:05Z")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
