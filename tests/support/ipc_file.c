/*
 * ipc_file.c — lock files for the ipc tests: the per-test directory and its fixtures, files
 * crafted byte by byte, snapshots, and the refusal check (see ipc_file.h).
 */
#define _GNU_SOURCE

#include "ipc_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

char sentinel_storage;

/* ---- the per-test directory and the fixtures ---------------------------------------------- */

char test_dir[64];
static mode_t saved_umask;

const char *P(const char *name)
{
    return temp_path(test_dir, name);
}

int entries_in_test_dir(void)
{
    DIR *d = opendir(test_dir);
    if (d == NULL) fail_msg("opendir %s: %s", test_dir, strerror(errno));
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

/* When the watchdog ends the run no teardown will run: it kills the children and removes the
 * test's directory itself. */
static void bail_cleanup(void)
{
    children_kill_tracked(false);
    temp_dir_remove(test_dir);
}

int ipc_group_setup(void **state)
{
    watchdog_on_bail(bail_cleanup);
    return watchdog_start(state);
}

/* Per test: arm the watchdog (*state is the test's name), make the directory (named after the
 * test binary), keep the umask. */
int ipc_test_setup(void **state)
{
    watchdog_arm(state);
    snprintf(test_dir, sizeof test_dir, "/tmp/surelock-%s-XXXXXX", program_invocation_short_name);
    if (mkdtemp(test_dir) == NULL) return -1;
    saved_umask = umask(022);
    umask(saved_umask);
    return 0;
}

/* Per test, also after a failure: no child outlives its test, the directory goes away. */
int ipc_test_teardown(void **state)
{
    children_kill_tracked(true);
    umask(saved_umask);
    temp_dir_remove(test_dir);
    test_dir[0] = '\0';
    temp_paths_free();
    return watchdog_disarm(state);
}

/* ---- sizes, errmsg, opening, bytes, snapshots, refusals ------------------------------------ */

size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

size_t file_size_for(size_t payload)
{
    size_t page = page_size();
    return HEADER_SIZE + (payload + page - 1) / page * page;
}


static void expect_errmsg_va(int line, va_list ap)
{
    const char *msg = surelock_errmsg();
    if (msg == NULL) fail_msg("line %d: surelock_errmsg() returned NULL", line);
    if (msg[0] == '\0') fail_msg("line %d: surelock_errmsg() is empty after a failure", line);
    const char *word;
    while ((word = va_arg(ap, const char *)) != NULL)
        if (strcasestr(msg, word) == NULL)
            fail_msg("line %d: errmsg \"%s\" does not mention \"%s\"", line, msg, word);
}

void expect_errmsg_all_at(int line, ...)
{
    va_list ap;
    va_start(ap, line);
    expect_errmsg_va(line, ap);
    va_end(ap);
}


surelock_ipc_options options(uint32_t flags, uint32_t mode, size_t payload_size)
{
    surelock_ipc_options o;
    surelock_ipc_options_init(&o);
    o.flags = flags;
    o.mode = mode;
    o.payload_size = payload_size;
    return o;
}


surelock_ipc *open_at(int line, const char *path, uint32_t flags, uint32_t mode, size_t payload)
{
    surelock_ipc_options o = options(flags, mode, payload);
    surelock_ipc *m = NULL;
    int rc = surelock_ipc_open(path, &o, &m);
    if (rc != 0)
        fail_msg("line %d: surelock_ipc_open(%s) returned %s (%d); errmsg: \"%s\"", line, path,
                 errname(rc), rc, surelock_errmsg());
    if (m == NULL) fail_msg("line %d: surelock_ipc_open returned 0 and a NULL handle", line);
    return m;
}


bytes slurp(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) fail_msg("cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) fail_msg("fstat %s: %s", path, strerror(errno));
    bytes b = {malloc((size_t)st.st_size + 1), 0};
    if (b.data == NULL) fail_msg("out of memory");
    ssize_t n;
    while (b.len < (size_t)st.st_size &&
           (n = pread(fd, b.data + b.len, (size_t)st.st_size - b.len, (off_t)b.len)) > 0)
        b.len += (size_t)n;
    close(fd);
    if (b.len != (size_t)st.st_size) fail_msg("short read of %s", path);
    return b;
}

/* Writes a file with exactly these bytes and this mode (replacing any regular file there). */
void spit(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) fail_msg("cannot create %s: %s", path, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, (const char *)data + done, len - done);
        if (n <= 0) fail_msg("cannot write %s: %s", path, strerror(errno));
        done += (size_t)n;
    }
    if (fchmod(fd, mode) != 0) fail_msg("chmod %s: %s", path, strerror(errno));
    close(fd);
}

void touch(const char *path, mode_t mode)
{
    spit(path, "", 0, mode);
}

uint32_t get32(const bytes *b, size_t off)
{
    uint32_t v;
    memcpy(&v, b->data + off, sizeof v);
    return v;
}

uint64_t get64(const bytes *b, size_t off)
{
    uint64_t v;
    memcpy(&v, b->data + off, sizeof v);
    return v;
}

void put16(bytes *b, size_t off, uint16_t v)
{
    memcpy(b->data + off, &v, sizeof v);
}

void put32(bytes *b, size_t off, uint32_t v)
{
    memcpy(b->data + off, &v, sizeof v);
}

void put64(bytes *b, size_t off, uint64_t v)
{
    memcpy(b->data + off, &v, sizeof v);
}

/* One field of the file at path, read now. */
uint32_t file32(const char *path, size_t off)
{
    bytes b = slurp(path);
    if (b.len < off + 4) fail_msg("%s is only %zu bytes", path, b.len);
    uint32_t v = get32(&b, off);
    free(b.data);
    return v;
}

uint64_t file64(const char *path, size_t off)
{
    bytes b = slurp(path);
    if (b.len < off + 8) fail_msg("%s is only %zu bytes", path, b.len);
    uint64_t v = get64(&b, off);
    free(b.data);
    return v;
}

/* Creates a valid lock file through the library and returns its bytes. */
bytes make_lock_file(const char *path, uint32_t flags, size_t payload)
{
    surelock_ipc *m = OPEN(path, flags, 0600, payload);
    EXPECT_RC(surelock_ipc_close(m), 0);
    return slurp(path);
}

void this_boot_id(char out[40])
{
    memset(out, 0, 40);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f == NULL) fail_msg("cannot read the boot id: %s", strerror(errno));
    if (fgets(out, 40, f) == NULL) out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
}


snapshot take_snapshot(const char *path)
{
    snapshot s;
    memset(&s, 0, sizeof s);
    s.exists = lstat(path, &s.st) == 0;
    if (s.exists && S_ISREG(s.st.st_mode)) s.content = slurp(path);
    return s;
}


void expect_unchanged_at(int line, const char *path, snapshot *before)
{
    snapshot after = take_snapshot(path);
    if (after.exists != before->exists)
        fail_msg("line %d: %s %s", line, path,
                 before->exists ? "was removed" : "was created");
    if (!before->exists) return;
    if ((after.st.st_mode & S_IFMT) != (before->st.st_mode & S_IFMT))
        fail_msg("line %d: %s changed its file type", line, path);
    if ((after.st.st_mode & 07777) != (before->st.st_mode & 07777))
        fail_msg("line %d: %s changed mode from 0%o to 0%o", line, path,
                 (unsigned)before->st.st_mode & 07777, (unsigned)after.st.st_mode & 07777);
    if (after.st.st_uid != before->st.st_uid || after.st.st_gid != before->st.st_gid)
        fail_msg("line %d: %s changed owner", line, path);
    if (after.st.st_ino != before->st.st_ino || after.st.st_dev != before->st.st_dev)
        fail_msg("line %d: %s was replaced by another file", line, path);
    if (after.st.st_rdev != before->st.st_rdev)
        fail_msg("line %d: %s changed its device number", line, path);
    if (S_ISREG(before->st.st_mode)) {
        if (after.content.len != before->content.len)
            fail_msg("line %d: %s changed size from %zu to %zu bytes", line, path,
                     before->content.len, after.content.len);
        for (size_t i = 0; i < before->content.len; i++)
            if (after.content.data[i] != before->content.data[i])
                fail_msg("line %d: %s changed at byte %zu (0x%02x -> 0x%02x)", line, path, i,
                         before->content.data[i], after.content.data[i]);
    }
    free(after.content.data);
    free(before->content.data);
    before->content.data = NULL;
}


void expect_refused_at(int line, bool names_path, const char *path,
                       const surelock_ipc_options *o, int want, const char *want_name, ...)
{
    snapshot before = take_snapshot(path);
    surelock_ipc *m = SENTINEL;
    uint64_t t0 = now_ns();
    int rc = surelock_ipc_open(path, o, &m);
    uint64_t took = now_ns() - t0;
    if (rc == 0 && m != SENTINEL && m != NULL) surelock_ipc_close(m);
    if (rc != want)
        fail_msg("line %d: opening %s returned %s (%d), expected %s; errmsg: \"%s\"", line, path,
                 errname(rc), rc, want_name, surelock_errmsg());
    if (m != SENTINEL) fail_msg("line %d: a refused open wrote its out-pointer", line);
    if (took > TIMED_WAIT_CEILING_NS)
        fail_msg("line %d: the refusal took %llu ms", line, (unsigned long long)(took / MS));
    if (names_path && strstr(surelock_errmsg(), path) == NULL)
        fail_msg("line %d: errmsg \"%s\" does not name the path %s", line, surelock_errmsg(),
                 path);
    va_list ap;
    va_start(ap, want_name);
    expect_errmsg_va(line, ap);
    va_end(ap);
    expect_unchanged_at(line, path, &before);
}


void poke(const char *path, size_t off, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) fail_msg("cannot open %s: %s", path, strerror(errno));
    if (pwrite(fd, data, len, (off_t)off) != (ssize_t)len)
        fail_msg("cannot write %s: %s", path, strerror(errno));
    close(fd);
}

void poke32(const char *path, size_t off, uint32_t v)
{
    poke(path, off, &v, sizeof v);
}

