// Package ctl is switchyardctl, the operator CLI for a switchyard router: it
// lists pools, moves traffic (weights, drains, capacity overrides, policy),
// explains routing decisions, watches changes and reads the audit log, all
// through the authenticated switchyard.v1.Admin API. cmd/switchyardctl's main
// only calls Run and ExitCode; tests call Run in-process.
//
//	switchyardctl [global flags] COMMAND [args] [flags]
//
// The bearer token comes from --token-file or SWITCHYARD_ADMIN_TOKEN. Exit
// status (ExitCode): 0 on success, 1 when the command failed, 2 on a usage
// error.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// ExitCode reports err (Run's result) on w and returns the process exit
// status: 0 for nil, 2 for a malformed command line (with the command's
// synopsis), 1 for any other failure.
func ExitCode(err error, w io.Writer) int {
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(w, "switchyardctl: %s\n", ue.msg)
		if ue.usage != "" {
			fmt.Fprintf(w, "usage: %s\n", ue.usage)
		}
		fmt.Fprintln(w, "run 'switchyardctl help' for the list of commands")
		return 2
	}
	fmt.Fprintf(w, "switchyardctl: %s\n", err)
	return 1
}

// usageError is a malformed command line (exit status 2).
type usageError struct {
	msg   string
	usage string // the command's synopsis, when known
}

func (e *usageError) Error() string { return e.msg }

func usagef(usage, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), usage: usage}
}

// environment is what Run takes from the process besides its arguments, so
// tests can supply their own.
type environment struct {
	getenv func(string) string
	stdin  io.Reader
}

// Run executes one switchyardctl command line (without the program name),
// reading the token's environment variable and stdin from the process.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runEnv(ctx, environment{getenv: os.Getenv, stdin: os.Stdin}, args, stdout, stderr)
}

func runEnv(ctx context.Context, env environment, args []string, stdout, stderr io.Writer) error {
	c := &cli{env: env, stdout: stdout, stderr: stderr}
	c.g.defaults()

	// Global flags before the command.
	fs := flag.NewFlagSet("switchyardctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(stdout)
			return nil
		}
		return usagef("", "%v", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usagef("switchyardctl [flags] COMMAND [args]", "no command given")
	}
	if rest[0] == "help" {
		printHelp(stdout)
		return nil
	}
	cmd, rest, err := lookup(rest)
	if err != nil {
		return err
	}

	// The command's own flags, and the global ones again so they may follow it.
	sub := flag.NewFlagSet("switchyardctl "+cmd.name, flag.ContinueOnError)
	sub.SetOutput(io.Discard)
	c.g.register(sub)
	var cf cmdFlags
	if cmd.flags != nil {
		cmd.flags(sub, &cf)
	}
	pos, err := parseInterspersed(sub, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: %s\n\n%s.\n", cmd.synopsis(), cmd.summary)
			if cmd.help != "" {
				fmt.Fprintln(stdout, cmd.help)
			}
			fmt.Fprintln(stdout, "\nflags (the global ones may also come before the command):")
			sub.SetOutput(stdout)
			sub.PrintDefaults()
			return nil
		}
		return usagef(cmd.synopsis(), "%s: %v", cmd.name, err)
	}
	if err := cmd.checkArgs(pos); err != nil {
		return err
	}
	if err := c.g.validate(); err != nil {
		return err
	}
	defer c.close()
	return cmd.run(ctx, c, pos, &cf)
}

// parseInterspersed parses flags that may come before, between or after
// positional arguments; after "--" every argument is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	return pos, nil
}
