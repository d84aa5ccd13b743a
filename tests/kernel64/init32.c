/* /init of the kernel64 boot test, compiled `gcc -m32 -static`: that it runs at all proves
 * IA32 emulation. It prints what the test checks on the serial console, one "AZL ..." line
 * each, then reboots (qemu runs with -no-reboot, so it exits). */
#define _GNU_SOURCE
#include <dirent.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

/* Each AZL line is one write(2), so kernel messages cannot split it. */
static void list_dir(const char *tag, const char *dir, const char *prefix)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "AZL %s:", tag);
	DIR *d = opendir(dir);
	struct dirent *e;
	if (d) {
		while ((e = readdir(d)))
			if (e->d_name[0] != '.' && !strncmp(e->d_name, prefix, strlen(prefix)) &&
			    n < (int)sizeof buf - 64)
				n += snprintf(buf + n, sizeof buf - n, " %s", e->d_name);
		closedir(d);
	}
	n += snprintf(buf + n, sizeof buf - n, "\n");
	write(1, buf, n);
}

static void show_link(const char *path)
{
	char target[400], buf[512];
	ssize_t n = readlink(path, target, sizeof target - 1);
	target[n > 0 ? n : 0] = 0;
	write(1, buf, snprintf(buf, sizeof buf, "AZL link %s -> %s\n", path, target));
}

int main(void)
{
	struct utsname u;
	char line[256];
	FILE *f;
	pid_t pid;
	int status;

	setvbuf(stdout, NULL, _IONBF, 0);
	uname(&u);
	printf("AZL ia32 machine=%s pointer_bits=%d\n", u.machine, (int)(8 * sizeof(void *)));
	mkdir("/proc", 0755);
	mkdir("/sys", 0755);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	if ((f = fopen("/proc/mounts", "r"))) {
		while (fgets(line, sizeof line, f))
			if (!strncmp(line, "/dev/root / ", 12) || strstr(line, " /dev "))
				printf("AZL mount %s", line);
		fclose(f);
	}
	show_link("/sys/block/sda");
	list_dir("ahci", "/sys/bus/pci/drivers/ahci", "0000:"); /* PCI devices the driver has */
	list_dir("net", "/sys/class/net", "");
	pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWNET)) {
			perror("AZL unshare(CLONE_NEWNET)");
			_exit(1);
		}
		/* a new sysfs instance shows the namespace's own devices */
		umount2("/sys", MNT_DETACH);
		mount("sysfs", "/sys", "sysfs", 0, NULL);
		list_dir("netns", "/sys/class/net", "");
		_exit(0);
	}
	waitpid(pid, &status, 0);
	printf("AZL unshare exit=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	printf("AZL done\n");
	sync();
	reboot(RB_AUTOBOOT);
	return 0;
}
