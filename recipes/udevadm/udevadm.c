/* udevadm for a system without udev: what Azure Linux's toolkit asks of it.
 *
 * The toolkit's image tools run `udevadm settle` after `losetup --show -f -P IMAGE`
 * (toolkit/tools/imagegen/diskutils/diskutils.go, WaitForDevicesToSettle) and then use
 * /dev/loopN and /dev/loopNpM. On a system with udevd, settle waits until udevd has
 * handled the kernel's events, which creates those nodes. Here there is no udevd: the
 * kernel's devtmpfs creates the nodes itself (when /dev is a devtmpfs), or nobody does.
 *
 * So `settle` checks every block device the kernel lists in /sys/class/block: its node
 * /dev/<DEVNAME> must be a block device with the major:minor of its `dev` file. On a
 * devtmpfs it waits up to GRACE_MS for the kernel to make a missing node; after that (and at
 * once when /dev is not a devtmpfs) it makes the node itself (mode 0660, owner root, group
 * "disk" where /etc/group has one) and replaces a block or character node with the wrong
 * numbers. It exits 0 when every node is right, 1 when one is still wrong at the timeout
 * (default 120 s, as udevadm's), naming it.
 *
 * Limits (what udev does and this does not): block devices only (no character devices);
 * no rules, no /dev/disk/by-* links, no permissions beyond root:disk 0660; nodes are never
 * removed (a node it made for a device that goes away stays; on a devtmpfs the kernel
 * removes only the nodes it made). `trigger` makes the nodes once and returns; `--version`
 * prints this tool's version. Any other command fails, naming what this udevadm does.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define VERSION "1 (azl-bootstrap: settle and trigger only, no udevd)"
#define SYS_BLOCK "/sys/class/block"
#define GRACE_MS 1000
#define POLL_MS 50

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Whether /dev is a devtmpfs: the last mount on /dev in /proc/self/mounts says. */
static int dev_is_devtmpfs(void)
{
	FILE *f = fopen("/proc/self/mounts", "r");
	char line[4096], dir[1024], type[256];
	int result = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "%*s %1023s %255s", dir, type) == 2 && strcmp(dir, "/dev") == 0)
			result = strcmp(type, "devtmpfs") == 0;
	fclose(f);
	return result;
}

static int read_small(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");
	size_t n;
	if (!f)
		return -1;
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = 0;
	return 0;
}

/* The node name of a sysfs block device: DEVNAME= of its uevent, else its sysfs name with
 * '!' for '/', as the kernel names it. Refuses names that would leave /dev. */
static int devname(const char *entry, char *out, size_t size)
{
	char path[512], buf[4096], *p;
	snprintf(out, size, "%s", entry);
	for (p = out; *p; p++)
		if (*p == '!')
			*p = '/';
	snprintf(path, sizeof path, SYS_BLOCK "/%s/uevent", entry);
	if (read_small(path, buf, sizeof buf) == 0)
		for (p = strtok(buf, "\n"); p; p = strtok(NULL, "\n"))
			if (strncmp(p, "DEVNAME=", 8) == 0)
				snprintf(out, size, "%s", p + 8);
	if (!out[0] || out[0] == '/' || strstr(out, ".."))
		return -1;
	return 0;
}

static gid_t disk_gid(void)
{
	struct group *g = getgrnam("disk");
	return g ? g->gr_gid : 0;
}

static int mkdirs_for(const char *path)
{
	char buf[1024], *p;
	snprintf(buf, sizeof buf, "%s", path);
	for (p = buf + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		if (mkdir(buf, 0755) == -1 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return 0;
}

/* Make /dev/<name> a block node for `dev`; 0 when done, else -1 with errno set. */
static int make_node(const char *node, dev_t dev)
{
	if (mkdirs_for(node) == -1)
		return -1;
	if (mknod(node, S_IFBLK | 0600, dev) == -1)
		return -1;
	if (chown(node, 0, disk_gid()) == -1 || chmod(node, 0660) == -1)
		return -1;
	fprintf(stderr, "udevadm: made %s (%u:%u)\n", node, major(dev), minor(dev));
	return 0;
}

/* One pass over /sys/class/block. With `fix`, make the missing nodes and replace device
 * nodes with wrong numbers. Returns how many nodes are still not right (with `report`,
 * naming them on stderr), or -1 when there is no sysfs to read. */
static int pass(int fix, int report)
{
	DIR *d = opendir(SYS_BLOCK);
	struct dirent *e;
	int bad = 0;
	if (!d) {
		fprintf(stderr, "udevadm: cannot read %s: %s (is sysfs mounted on /sys?)\n",
			SYS_BLOCK, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		char path[512], buf[64], name[256], node[300];
		unsigned maj, min;
		struct stat st;
		dev_t dev;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, SYS_BLOCK "/%s/dev", e->d_name);
		if (read_small(path, buf, sizeof buf) == -1 || sscanf(buf, "%u:%u", &maj, &min) != 2)
			continue; /* gone meanwhile, or no node of its own */
		if (devname(e->d_name, name, sizeof name) == -1)
			continue;
		snprintf(node, sizeof node, "/dev/%s", name);
		dev = makedev(maj, min);
		if (lstat(node, &st) == 0 && S_ISBLK(st.st_mode) && st.st_rdev == dev)
			continue;
		if (fix) {
			int exists = lstat(node, &st) == 0;
			int is_node = exists && (S_ISBLK(st.st_mode) || S_ISCHR(st.st_mode));
			if ((!exists || (is_node && unlink(node) == 0)) && make_node(node, dev) == 0)
				continue;
			if (report && exists && !is_node)
				fprintf(stderr, "udevadm: %s (%u:%u) is in the way: not a device node\n",
					node, maj, min);
			else if (report)
				fprintf(stderr, "udevadm: cannot make %s (%u:%u): %s\n", node, maj, min,
					strerror(errno));
		} else if (report) {
			fprintf(stderr, "udevadm: %s (%u:%u) is missing\n", node, maj, min);
		}
		bad++;
	}
	closedir(d);
	return bad;
}

static int settle(long timeout_s, const char *exit_if_exists)
{
	long long start = now_ms(), deadline = start + timeout_s * 1000;
	int grace = dev_is_devtmpfs() ? GRACE_MS : 0;
	for (;;) {
		long long t = now_ms();
		int last = t >= deadline;
		if (exit_if_exists && access(exit_if_exists, F_OK) == 0)
			return 0;
		int bad = pass(t - start >= grace || last, last);
		if (bad <= 0)
			return bad ? 1 : 0; /* no sysfs: nothing will change by waiting */
		if (last) {
			fprintf(stderr, "udevadm settle: timed out after %ld s with the nodes above "
				"not right\n", timeout_s);
			return 1;
		}
		sleep_ms(POLL_MS);
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: udevadm settle [-t SECONDS|--timeout=SECONDS] [-E FILE|--exit-if-exists=FILE]\n"
		"       udevadm trigger [ignored options]\n"
		"       udevadm --version\n"
		"azl-bootstrap's udevadm for a system without udevd: settle makes sure every block\n"
		"device in " SYS_BLOCK " has its node in /dev (devtmpfs or made here);\n"
		"no other udevadm command, no rules, no /dev/disk links.\n");
}

static int number(const char *s, long *out)
{
	char *end;
	errno = 0;
	*out = strtol(s, &end, 10);
	return errno || !*s || *end || *out < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
	int i = 1;
	while (i < argc && argv[i][0] == '-') { /* global options */
		if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-V")) {
			puts(VERSION);
			return 0;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "-d") || !strcmp(argv[i], "--debug")) {
			; /* what it does is always reported on stderr */
		} else {
			fprintf(stderr, "udevadm: unknown option %s\n", argv[i]);
			usage(stderr);
			return 2;
		}
		i++;
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[i], "version")) {
		puts(VERSION);
		return 0;
	}
	if (!strcmp(argv[i], "trigger"))
		return pass(1, 1) ? 1 : 0; /* -1 (no sysfs) too */
	if (strcmp(argv[i], "settle")) {
		fprintf(stderr, "udevadm: '%s' is not supported: this udevadm (azl-bootstrap's, "
			"no udevd) has only settle, trigger and --version\n", argv[i]);
		return 2;
	}
	long timeout = 120;
	const char *exists = NULL;
	for (i++; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		if (!strcmp(a, "-t") || !strcmp(a, "--timeout") || !strcmp(a, "-E") ||
		    !strcmp(a, "--exit-if-exists")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "udevadm settle: %s needs a value\n", a);
				return 2;
			}
			v = argv[++i];
		} else if (!strncmp(a, "--timeout=", 10) || !strncmp(a, "--exit-if-exists=", 17)) {
			v = strchr(a, '=') + 1;
		} else if (!strncmp(a, "-t", 2) || !strncmp(a, "-E", 2)) {
			v = a + 2;
		} else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			continue;
		} else {
			fprintf(stderr, "udevadm settle: unknown option %s\n", a);
			return 2;
		}
		if (a[1] == 't' || !strncmp(a, "--timeout", 9)) {
			if (number(v, &timeout) == -1) {
				fprintf(stderr, "udevadm settle: bad timeout %s (whole seconds)\n", v);
				return 2;
			}
		} else {
			exists = v;
		}
	}
	return settle(timeout, exists);
}
