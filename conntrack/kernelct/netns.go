package kernelct

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsHandle pins the network namespace a Conn works in: an open descriptor
// of the namespace, so that every socket the Conn opens later (the event
// sockets, a redial after a cancelled request) lands in the same
// namespace whichever goroutine and OS thread opens it.
type nsHandle struct {
	fd       int
	dev, ino uint64
}

// threadNS opens the namespace of the calling OS thread. The caller's
// goroutine is locked to its thread while the namespace is read, so a
// caller inside netns.Namespace.Do gets the namespace it entered.
func threadNS() (*nsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return openNS("/proc/thread-self/ns/net")
}

// openNS opens the namespace file at path (/run/netns/NAME,
// /proc/PID/ns/net, ...).
func openNS(path string) (*nsHandle, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("kernelct: open network namespace %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kernelct: stat network namespace %s: %w", path, err)
	}
	return &nsHandle{fd: fd, dev: st.Dev, ino: st.Ino}, nil
}

func (n *nsHandle) close() error { return unix.Close(n.fd) }
