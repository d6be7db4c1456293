package control

import (
	"net"

	"golang.org/x/sys/unix"
)

// listenUnix listens with a umask that leaves the new socket file at most 0660.
func listenUnix(path string) (*net.UnixListener, error) {
	old := unix.Umask(0o117)
	defer unix.Umask(old)
	return net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
}
