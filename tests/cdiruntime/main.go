// Command cdi-inject shows what a container gets from CDI device IDs, computed by the CDI Go
// library (tags.cncf.io/container-device-interface) exactly as containerd applies it.
//
//	cdi-inject [--run-hooks SCRATCH_ROOT] --spec-dir DIR [--spec-dir DIR ...] CDI_ID [CDI_ID ...]
//
// It loads a CDI cache from exactly the given spec directories (a later directory has the
// higher priority; no file watching), injects the IDs into an empty OCI spec with
// Cache.InjectDevices, as containerd's pkg/cdi WithCDIDevices does, and prints the result as
// one JSON document (see README.md).
//
// Exit codes: 0 injected; 1 a spec failed to load, an ID did not resolve or the injection
// failed (one "cdi-inject: " line per problem on stderr, nothing on stdout); 2 a usage error;
// 3 injected, but two IDs set one env variable, mount or device node to different values
// (the JSON is printed, with its "conflicts").
//
// Unlike containerd, which only logs a failed refresh, every spec load error is fatal: a test
// must not pass because the runtime skipped a broken spec.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"
)

const (
	exitOK        = 0
	exitFailed    = 1
	exitUsage     = 2
	exitConflicts = 3
)

// specDirs is the repeatable --spec-dir flag, in priority order (lowest first).
type specDirs []string

func (d *specDirs) String() string { return strings.Join(*d, ",") }

func (d *specDirs) Set(value string) error {
	if value == "" {
		return errors.New("empty directory")
	}
	*d = append(*d, value)
	return nil
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var dirs specDirs
	flags := flag.NewFlagSet("cdi-inject", flag.ContinueOnError)
	flags.Var(&dirs, "spec-dir", "a CDI spec directory (repeatable; a later one has the higher priority)")
	runHooks := flags.String("run-hooks", "", "run the injected createContainer hooks with a bundle whose root.path is this directory")
	flags.Usage = func() {
		fmt.Fprintln(flags.Output(), "usage: cdi-inject [--run-hooks SCRATCH_ROOT] --spec-dir DIR [--spec-dir DIR ...] CDI_ID [CDI_ID ...]")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		return exitUsage
	}
	if len(dirs) == 0 || flags.NArg() == 0 {
		flags.Usage()
		return exitUsage
	}

	container, problems := inject(dirs, uniqueIDs(flags.Args()))
	if len(problems) == 0 && *runHooks != "" {
		problems = runCreateContainerHooks(container.spec, *runHooks)
	}
	if len(problems) > 0 {
		for _, problem := range problems {
			// One line per problem: wrapped library errors may span lines.
			fmt.Fprintf(os.Stderr, "cdi-inject: %s\n", strings.ReplaceAll(problem, "\n", "; "))
		}
		return exitFailed
	}

	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	if err := encoder.Encode(container.report); err != nil {
		fmt.Fprintf(os.Stderr, "cdi-inject: write the result: %v\n", err)
		return exitFailed
	}
	if len(container.report.Conflicts) > 0 {
		return exitConflicts
	}
	return exitOK
}

// uniqueIDs drops repeated IDs, keeping the first: containerd's CRI (WithCDI) skips
// duplicated CDI devices before it calls WithCDIDevices.
func uniqueIDs(ids []string) []string {
	seen := map[string]bool{}
	var unique []string
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			unique = append(unique, id)
		}
	}
	return unique
}

// injected is the OCI spec the library produced and the report made from it.
type injected struct {
	spec   *oci.Spec
	report report
}

// inject loads the cache and injects ids; on failure it returns one message per problem.
func inject(dirs []string, ids []string) (injected, []string) {
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(false))
	if err != nil {
		return injected{}, []string{fmt.Sprintf("create the CDI cache: %v", err)}
	}
	// Refresh's joined error repeats GetErrors(); the per-file map gives one line each.
	_ = cache.Refresh()
	if problems := loadProblems(cache.GetErrors()); len(problems) > 0 {
		return injected{}, problems
	}

	// What containerd's CRI hands WithCDIDevices, minus the defaults (mounts, env, a cgroup
	// rule denying all devices) that are not CDI's: the library needs Process and Linux.
	spec := &oci.Spec{Version: oci.Version, Process: &oci.Process{}, Linux: &oci.Linux{}}
	unresolved, err := cache.InjectDevices(spec, ids...)
	if len(unresolved) > 0 {
		problems := make([]string, 0, len(unresolved))
		for _, id := range unresolved {
			problems = append(problems, fmt.Sprintf(
				"unresolvable CDI device %s: no valid spec in %s defines it", id, strings.Join(dirs, ", ")))
		}
		return injected{}, problems
	}
	if err != nil {
		return injected{}, []string{fmt.Sprintf("CDI device injection failed: %v", err)}
	}

	edits := effectiveEdits(cache, ids)
	return injected{spec: spec, report: newReport(spec, edits)}, nil
}

// loadProblems flattens the cache's errors, each after its spec file's path (the library's
// validation errors do not name the file).
func loadProblems(errs map[string][]error) []string {
	paths := make([]string, 0, len(errs))
	for path := range errs {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	var problems []string
	for _, path := range paths {
		for _, err := range errs[path] {
			problems = append(problems, fmt.Sprintf("%s: %v", path, err))
		}
	}
	return problems
}

// runCreateContainerHooks runs the spec's createContainer hooks in order, as a runtime would
// but on this host (not in a container's mount namespace): each gets the OCI state on stdin,
// its own args and env (nothing inherited), and its timeout. The state's bundle is a temp dir
// holding config.json, the injected spec with root.path = scratchRoot, so a hook that edits
// the container's root edits scratchRoot. Returns one message per failed hook.
func runCreateContainerHooks(spec *oci.Spec, scratchRoot string) []string {
	if spec.Hooks == nil || len(spec.Hooks.CreateContainer) == 0 {
		return nil
	}
	root, err := filepath.Abs(scratchRoot)
	if err != nil {
		return []string{fmt.Sprintf("--run-hooks %s: %v", scratchRoot, err)}
	}
	bundle, err := os.MkdirTemp("", "cdi-inject-bundle-")
	if err != nil {
		return []string{fmt.Sprintf("create the hooks' bundle: %v", err)}
	}
	defer os.RemoveAll(bundle)
	config := *spec
	config.Root = &oci.Root{Path: root}
	configJSON, err := json.MarshalIndent(&config, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(bundle, "config.json"), configJSON, 0o644)
	}
	if err != nil {
		return []string{fmt.Sprintf("write the hooks' config.json: %v", err)}
	}
	state, err := json.Marshal(oci.State{
		Version: oci.Version, ID: "cdi-inject", Status: oci.StateCreating, Bundle: bundle,
	})
	if err != nil {
		return []string{fmt.Sprintf("encode the OCI state: %v", err)}
	}

	var problems []string
	for i, h := range spec.Hooks.CreateContainer {
		if err := runHook(h, state); err != nil {
			problems = append(problems, fmt.Sprintf("createContainer hook #%d (%s): %v", i, h.Path, err))
		}
	}
	return problems
}

func runHook(h oci.Hook, state []byte) error {
	ctx := context.Background()
	if h.Timeout != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, h.Path)
	if len(h.Args) > 0 {
		cmd.Args = h.Args // args[0] is argv[0], as in execv and the OCI runtime spec
	}
	cmd.Env = h.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // nil would inherit ours
	}
	cmd.Stdin = bytes.NewReader(state)
	// The hook's output must not mix with the JSON on stdout; it is shown when the hook fails.
	output, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %d s", *h.Timeout)
		}
		if text := strings.TrimSpace(string(output)); text != "" {
			return fmt.Errorf("%w: %s", err, text)
		}
		return err
	}
	return nil
}
