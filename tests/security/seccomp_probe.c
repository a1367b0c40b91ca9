/* The seccomp tests' probe, built static into a test image: the syscalls busybox has no applet for,
 * through the native ABI and through x86_64's i386 (int 0x80) and x32 ABIs. Prints one line per call:
 * "<what>: ok <result>" or "<what>: <strerror>". */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* i386 ABI arguments are 32 bits: strings are copied to static storage (a -no-pie binary's data is
 * below 4 GiB). */
static char arg[256];
static const char key_type[] = "user";
static const char payload[] = "stolen";

static int report(const char *what, long r) {
    if (r < 0 && r > -4096) { /* raw syscall return */
        printf("%s: %s\n", what, strerror((int)-r));
        return 1;
    }
    printf("%s: ok %ld\n", what, r);
    return 0;
}

static long libc_result(long r) { return r < 0 ? -errno : r; }

#if defined(__x86_64__)
static long i386_syscall(long nr, long a, long b, long c, long d, long e) {
    long r;
    __asm__ volatile("int $0x80"
                     : "=a"(r)
                     : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                     : "memory");
    return r;
}
static long x32_syscall(long nr, long a, long b) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr | 0x40000000L), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return r;
}
#endif

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    const char *cmd = argv[1];
    if (argc > 2)
        strncpy(arg, argv[2], sizeof arg - 1);
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(cmd, "add"))
        return report("add_key", libc_result(syscall(SYS_add_key, key_type, arg, payload,
                                                     sizeof payload - 1, KEY_SPEC_USER_KEYRING)));
    if (!strcmp(cmd, "find"))
        return report("keyctl search", libc_result(syscall(SYS_keyctl, KEYCTL_SEARCH,
                                                           KEY_SPEC_USER_KEYRING, key_type, arg, 0)));
    if (!strcmp(cmd, "clone-newuser")) {
        long pid = libc_result(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
        if (pid == 0)
            _exit(0);
        return report("clone(CLONE_NEWUSER)", pid);
    }
    if (!strcmp(cmd, "clone3")) {
        unsigned long long args[11] = {0};
        args[4] = SIGCHLD; /* exit_signal */
        long pid = libc_result(syscall(SYS_clone3, args, sizeof args));
        if (pid == 0)
            _exit(0);
        return report("clone3", pid);
    }
#if defined(__x86_64__)
    /* i386: add_key 286, mkdir 39; x32: mkdir 83. */
    if (!strcmp(cmd, "i386-add"))
        return report("i386 add_key", i386_syscall(286, (long)key_type, (long)arg, (long)payload,
                                                   sizeof payload - 1, KEY_SPEC_USER_KEYRING));
    if (!strcmp(cmd, "i386-mkdir"))
        return report("i386 mkdir", i386_syscall(39, (long)arg, 0755, 0, 0, 0));
    if (!strcmp(cmd, "x32-mkdir"))
        return report("x32 mkdir", x32_syscall(83, (long)arg, 0755));
#endif
    fprintf(stderr, "unknown probe %s\n", cmd);
    return 2;
}
