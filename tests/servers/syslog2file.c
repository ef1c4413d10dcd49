/* LD_PRELOAD shim: send syslog(3) output to the file named by $MAILRULES_SYSLOG_FILE.
 * This machine has no syslog daemon (/dev/log), and Cyrus logs only to
 * syslog, so without this its errors vanish.  Built by tests/servers/install.sh into
 * its cache directory. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <syslog.h>

static char ident[64] = "?";

void openlog(const char *id, int opt, int fac) {
    (void)opt; (void)fac;
    if (id) { strncpy(ident, id, sizeof ident - 1); ident[sizeof ident - 1] = 0; }
}
void closelog(void) {}

static void emit(int pri, const char *fmt, va_list ap) {
    const char *path = getenv("MAILRULES_SYSLOG_FILE");
    if (!path) return;
    char msg[8192];
    int saved = 0;
    (void)saved;
    vsnprintf(msg, sizeof msg, fmt, ap);   /* %m is handled by glibc printf */
    char line[8448];
    time_t t = time(NULL); struct tm tm; localtime_r(&t, &tm);
    char ts[32]; strftime(ts, sizeof ts, "%H:%M:%S", &tm);
    int n = snprintf(line, sizeof line, "%s %s[%d] <%d> %s\n", ts, ident, (int)getpid(), pri & 7, msg);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (fd >= 0) { if (write(fd, line, n > (int)sizeof line ? (int)sizeof line : n) < 0) {} close(fd); }
}
void vsyslog(int pri, const char *fmt, va_list ap) { emit(pri, fmt, ap); }
void syslog(int pri, const char *fmt, ...) { va_list ap; va_start(ap, fmt); emit(pri, fmt, ap); va_end(ap); }
void __syslog_chk(int pri, int flag, const char *fmt, ...) { (void)flag; va_list ap; va_start(ap, fmt); emit(pri, fmt, ap); va_end(ap); }
void __vsyslog_chk(int pri, int flag, const char *fmt, va_list ap) { (void)flag; emit(pri, fmt, ap); }
