package main

// A throw-away virtual machine for a measurement this machine's limits
// forbid: 50,000 idle UDP flows take 50,000 descriptors in the proxy, and
// where the hard descriptor limit is lower and CAP_SYS_RESOURCE is not
// ours to raise it, the idle row runs in a VM instead: qemu under
// software emulation (no KVM needed), booting Debian's cloud kernel
// (bench/setup.sh fetches it into vmKernelDir) straight into an initramfs
// of this binary, built static, as /init, the ambassadord binary measured,
// /dev/console and /dev/null. As PID 1 the bench mounts /proc, runs
// the helper the kernel's command line names (udpidle, whose limits it
// raises as root of the VM) and powers off; its result comes back on the
// serial console, marked with vmResultMark. Nothing of the machine is
// changed, and the VM has no network but its loopback.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambassadord/ambassadord/internal/harness"
)

const (
	// vmKernelDir is where bench/setup.sh puts the kernel the VM boots.
	vmKernelDir = "/var/cache/ambassadord-bench"

	// vmResultMark starts the console line that carries a helper's
	// result, among the kernel's.
	vmResultMark = "bench-vm-result: "

	// vmMemory is the VM's memory, MiB. UDP's memory limit (udp_mem)
	// is a share of it, and a UDP socket that received a datagram keeps
	// a page of it accounted while it lives: with 2 GiB, the flows' and
	// the clients' sockets reach the limit at about 45,000 flows, and
	// datagrams are dropped.
	vmMemory = 4096

	// vmCPUs is the VM's processors: qemu emulates each on a thread of
	// its own.
	vmCPUs = 2

	// vmLogMark starts the console lines that carry the end of the
	// logs the helper's processes wrote in the VM's /tmp, which die with
	// it.
	vmLogMark = "bench-vm-log: "

	// vmTimeout bounds a VM's run: boot (3 s here) and the helper.
	vmTimeout = 10 * time.Minute
)

// vmKernel returns the kernel the VM boots, the newest in vmKernelDir, or
// why there is none.
func vmKernel() (string, error) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil || runtime.GOARCH != "amd64" {
		return "", errors.New("no qemu-system-x86_64 (bench/setup.sh installs it, on amd64)")
	}
	ks, _ := filepath.Glob(filepath.Join(vmKernelDir, "vmlinuz-*"))
	if len(ks) == 0 {
		return "", fmt.Errorf("no kernel in %s (bench/setup.sh fetches Debian's cloud kernel there)", vmKernelDir)
	}
	slices.Sort(ks)
	return ks[len(ks)-1], nil
}

// runInVM boots kernel with an initramfs of this binary, built static, as
// /init and files (its path in the VM → the machine's), runs the bench
// helper args there, and returns what it printed as its result, and the
// end of the logs its processes wrote.
func runInVM(ctx context.Context, kernel string, files map[string]string, args []string) (result, logs string, err error) {
	dir, err := os.MkdirTemp("", "bench-vm-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(dir)
	initBin := filepath.Join(dir, "init")
	root, err := harness.RepoRoot(ctx)
	if err != nil {
		return "", "", fmt.Errorf("build the VM's init (run the bench from the repository): %w", err)
	}
	if err := harness.GoBuild(ctx, root, "./bench", initBin, ""); err != nil {
		return "", "", fmt.Errorf("build the VM's init: %w", err)
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := writeInitramfs(initrd, initBin, files); err != nil {
		return "", "", fmt.Errorf("initramfs: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, vmTimeout)
	defer cancel()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", "-m", fmt.Sprint(vmMemory), "-smp", fmt.Sprint(vmCPUs), "-nographic", "-no-reboot",
		"-nic", "none", "-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1 -- "+strings.Join(args, " "))
	var console bytes.Buffer
	qemu.Stdout, qemu.Stderr = &console, &console
	if err := qemu.Run(); err != nil {
		return "", "", fmt.Errorf("qemu: %w: %s", err, lastLines(console.String(), 5))
	}
	var logLines []string
	for _, line := range strings.Split(console.String(), "\n") {
		if _, l, ok := strings.Cut(line, vmLogMark); ok {
			logLines = append(logLines, strings.TrimRight(l, "\r"))
		}
		if _, res, ok := strings.Cut(line, vmResultMark); ok {
			result = strings.TrimSpace(res)
		}
	}
	if result == "" {
		return "", "", fmt.Errorf("no result on the VM's console: %s", lastLines(console.String(), 5))
	}
	return result, strings.Join(logLines, "\n"), nil
}

// writeInitramfs writes an initramfs (a "newc" cpio archive) holding
// initBin as /init, files, /dev/console and /dev/null, and the directories
// they need.
func writeInitramfs(path, initBin string, files map[string]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := &cpioWriter{w: f}
	for _, d := range []string{"dev", "proc", "tmp"} {
		w.entry(d, unix.S_IFDIR|0o755, 0, nil)
	}
	w.entry("dev/console", unix.S_IFCHR|0o600, unix.Mkdev(5, 1), nil)
	w.entry("dev/null", unix.S_IFCHR|0o666, unix.Mkdev(1, 3), nil)
	all := map[string]string{"init": initBin}
	for name, src := range files {
		all[strings.TrimPrefix(name, "/")] = src
	}
	for _, name := range slices.Sorted(maps.Keys(all)) {
		data, err := os.ReadFile(all[name])
		if err != nil {
			f.Close()
			return err
		}
		w.entry(name, unix.S_IFREG|0o755, 0, data)
	}
	w.entry("TRAILER!!!", 0, 0, nil)
	return errors.Join(w.err, f.Close())
}

// cpioWriter writes a cpio archive in the "newc" format, the kernel's
// initramfs format: each entry a header of 13 hexadecimal fields, its
// name and its data, each padded to 4 bytes.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

func (c *cpioWriter) entry(name string, mode uint32, rdev uint64, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	var b bytes.Buffer
	fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, unix.Major(rdev), unix.Minor(rdev), len(name)+1, 0)
	b.WriteString(name)
	b.WriteByte(0)
	pad := func() { b.Write(make([]byte, (4-b.Len()%4)%4)) }
	pad()
	b.Write(data)
	pad()
	_, c.err = c.w.Write(b.Bytes())
}

// vmInit is the bench as a VM's PID 1: it mounts /proc, runs helper with
// args, writes its result (its standard output, one line) to the console
// after vmResultMark, its errors too, then the end of the logs in /tmp
// after vmLogMark, and powers the VM off.
func vmInit(helper func([]string) error, args []string) {
	defer unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	defer vmLogs(os.Stdout)
	console := os.Stdout
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		fmt.Fprintf(console, "%s{\"error\":%q}\n", vmResultMark, "mount /proc: "+err.Error())
		return
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(console, "%s{\"error\":%q}\n", vmResultMark, err.Error())
		return
	}
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		out, _ := io.ReadAll(r)
		done <- out
	}()
	herr := helper(args)
	w.Close()
	out := bytes.TrimSpace(<-done)
	os.Stdout = console
	if herr != nil {
		fmt.Fprintf(console, "%s{\"error\":%q}\n", vmResultMark, herr.Error())
		return
	}
	fmt.Fprintf(console, "%s%s\n", vmResultMark, out)
}

// inVM reports whether the bench runs as a VM's init.
func inVM() bool { return os.Getpid() == 1 }

// vmLogs writes the last lines of each log in /tmp to console, after
// vmLogMark.
func vmLogs(console io.Writer) {
	logs, _ := filepath.Glob("/tmp/*.log")
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(lastLines(string(data), 5), "\n") {
			fmt.Fprintf(console, "%s%s: %s\n", vmLogMark, filepath.Base(l), line)
		}
	}
}
