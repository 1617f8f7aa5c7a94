// Command pause is the sandbox (pause) container of the real-node test bed: it holds the
// pod's namespaces, reaps the zombies it inherits as PID 1, and exits 0 on SIGINT or SIGTERM,
// as the upstream pause (kubernetes/build/pause/linux/pause.c) does. Standard library only
// and built with CGO_ENABLED=0, so the image is this one static file (make images).
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is what -v prints; the image tag (registry.local/dcu-dra/pause:3.10) follows the
// upstream pause version whose behaviour this copies.
const version = "3.10-dcu-dra"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Printf("pause.go %s\n", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	// Buffered: a signal that arrives while reaping is kept, not dropped. SIGCHLD signals
	// coalesce, so each one reaps every child that has exited.
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reapChildren()
			continue
		}
		fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
		os.Exit(0)
	}
}

// reapChildren waits for every exited child without blocking, so none stays a zombie.
func reapChildren() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}
