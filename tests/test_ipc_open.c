/*
 * test_ipc_open.c — the robust cross-process mutex (API.md section 4): creating, opening and
 * validating lock files, through the public header only, against the real shared
 * libsurelock.so.1. Every bad file, option or path gets its exact errno and a precise errmsg
 * and is left exactly as it was; files from another boot, held by hostile or unrelated
 * processes, or corrupt in their lock word are told apart; surelock_ipc_unlink.
 * Fixtures and rules: support/ipc_file.h, support/ipc_holder.h.
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <surelock.h>

#include "support/bounded.h"
#include "support/ipc_file.h"
#include "support/ipc_holder.h"

/* A uid that is not ours (the tests run as root in CI; see file_owned_by_another_uid_...). */
#define OTHER_UID 12345

/* =========================================================================================
 * Creating and opening
 * ========================================================================================= */

static void open_creates_a_lock_file_with_the_documented_header(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, NULL, &m), 0);
    assert_true(m != NULL && m != SENTINEL);

    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600); /* the default mode */
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(st.st_size, HEADER_SIZE);

    char boot_id[40];
    this_boot_id(boot_id);
    struct stat ns;
    uint64_t pid_ns = stat("/proc/self/ns/pid", &ns) == 0 ? (uint64_t)ns.st_ino : 0;

    bytes b = slurp(path);
    assert_memory_equal(b.data + OFF_MAGIC, "SURELOCK", 8);
    assert_int_equal(get32(&b, OFF_FORMAT_VERSION), 1);
    assert_int_equal(get32(&b, OFF_INIT_STATE), STATE_READY);
    uint16_t u16;
    memcpy(&u16, b.data + OFF_POINTER_SIZE, 2);
    assert_int_equal(u16, sizeof(void *));
    memcpy(&u16, b.data + OFF_MUTEX_SIZE, 2);
    assert_int_equal(u16, sizeof(pthread_mutex_t));
    memcpy(&u16, b.data + OFF_MUTEX_ALIGN, 2);
    assert_int_equal(u16, _Alignof(pthread_mutex_t));
    memcpy(&u16, b.data + OFF_HEADER_SIZE, 2);
    assert_int_equal(u16, HEADER_SIZE);
    assert_string_equal((const char *)b.data + OFF_LIBC, "glibc");
    assert_memory_equal(b.data + OFF_BOOT_ID, boot_id, strlen(boot_id) + 1);
    assert_int_equal(get64(&b, OFF_PID_NAMESPACE), pid_ns);
    static const unsigned char zero16[16];
    assert_memory_not_equal(b.data + OFF_LOCK_ID, zero16, 16); /* random: zero is 2^-128 */
    assert_int_equal(get32(&b, OFF_CREATOR_UID), geteuid());
    assert_int_equal(get32(&b, OFF_FLAGS), 0);
    assert_int_equal(get64(&b, OFF_PAYLOAD_SIZE), 0);
    assert_int_equal(get64(&b, OFF_OWNER_DEATHS), 0);
    assert_int_equal(get32(&b, OFF_RECOVERY_STATE), RECOVERY_CONSISTENT);
    assert_int_equal(get32(&b, OFF_HOLDER_TID), 0);
    free(b.data);

    /* A second lock file gets another random id. */
    bytes other = make_lock_file(P("other"), 0, 0);
    bytes again = slurp(path);
    assert_memory_not_equal(other.data + OFF_LOCK_ID, again.data + OFF_LOCK_ID, 16);
    free(other.data);
    free(again.data);

    EXPECT_RC(surelock_ipc_lock(m), 0);
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    assert_int_equal((int32_t)file32(path, OFF_HOLDER_TID), current_tid());
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    assert_int_equal(file32(path, OFF_HOLDER_TID), 0);
    size_t size = 123;
    assert_null(surelock_ipc_payload(m, &size));
    assert_int_equal(size, 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* Closing never removes the file; opening it again finds the same lock. */
    assert_int_equal(lstat(path, &st), 0);
    m = OPEN(path, SURELOCK_IPC_NOCREATE, 0600, 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void null_handles_paths_and_out_pointers_are_einval(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(NULL, NULL, &m), EINVAL);
    EXPECT_ERRMSG("path");
    assert_ptr_equal(m, SENTINEL);
    EXPECT_RC(surelock_ipc_open(path, NULL, NULL), EINVAL);
    EXPECT_ERRMSG("out");
    struct stat st;
    assert_int_equal(lstat(path, &st), -1); /* nothing created */

    EXPECT_RC(surelock_ipc_close(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_ipc_lock(NULL), EINVAL);
    EXPECT_RC(surelock_ipc_trylock(NULL), EINVAL);
    EXPECT_RC(surelock_ipc_timedlock(NULL, 0), EINVAL);
    EXPECT_RC(surelock_ipc_timedlock(NULL, SURELOCK_FOREVER), EINVAL);
    EXPECT_RC(surelock_ipc_consistent(NULL), EINVAL);
    EXPECT_RC(surelock_ipc_unlock(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");
    EXPECT_RC(surelock_ipc_unlink(NULL), EINVAL);
    EXPECT_ERRMSG("NULL");

    /* The functions without an errno answer 0 / NULL. */
    assert_int_equal(surelock_ipc_needs_recovery(NULL), 0);
    size_t size = 123;
    assert_null(surelock_ipc_payload(NULL, &size));
    assert_int_equal(size, 0);
    assert_null(surelock_ipc_payload(NULL, NULL));
}

static void options_too_small_unknown_flags_and_mode_beyond_0777_are_einval(void **state)
{
    (void)state;
    const char *fresh = P("fresh");
    const char *existing = P("existing");
    free(make_lock_file(existing, 0, 0).data);

    surelock_ipc_options o;
    const char *paths[] = {fresh, existing};
    for (int i = 0; i < 2; i++) {
        o = options(0, 0600, 0);
        o.size = sizeof o - 1;
        EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "size");
        o.size = 0;
        EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "size");
        o.size = offsetof(surelock_ipc_options, payload_size);
        EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "size");

        const uint32_t unknown[] = {0x8u, 0x100u, 0x80000000u,
                                    SURELOCK_IPC_NOCREATE | 0x10u};
        for (size_t k = 0; k < sizeof unknown / sizeof unknown[0]; k++) {
            o = options(unknown[k], 0600, 0);
            EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "flag");
        }
        o = options(0, 01600, 0);
        EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "mode");
        o = options(0, 04700, 0);
        EXPECT_OPTIONS_REFUSED(paths[i], &o, EINVAL, "mode");
    }

    /* A larger struct (a later version's) is read up to this version's size: the rest is
     * ignored, whatever it holds. */
    struct {
        surelock_ipc_options o;
        unsigned char later[64];
    } bigger;
    memset(&bigger, 0xff, sizeof bigger);
    bigger.o = options(0, 0640, 0);
    bigger.o.size = sizeof bigger;
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(fresh, &bigger.o, &m), 0);
    struct stat st;
    assert_int_equal(stat(fresh, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void missing_file_with_nocreate_is_enoent_and_creates_nothing(void **state)
{
    (void)state;
    const char *path = P("missing");
    surelock_ipc_options o = options(SURELOCK_IPC_NOCREATE, 0600, 0);
    EXPECT_REFUSED(path, &o, ENOENT, "NOCREATE");
    o = options(SURELOCK_IPC_NOCREATE | SURELOCK_IPC_RECURSIVE | SURELOCK_IPC_ANY_OWNER, 0666, 64);
    EXPECT_REFUSED(path, &o, ENOENT, NULL);
    assert_int_equal(entries_in_test_dir(), 0);

    /* NOCREATE opens a file that exists. */
    free(make_lock_file(path, 0, 0).data);
    surelock_ipc *m = OPEN(path, SURELOCK_IPC_NOCREATE, 0600, 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void created_file_has_exactly_the_requested_mode_whatever_the_umask(void **state)
{
    (void)state;
    const mode_t umasks[] = {077, 000, 022, 0777};
    const uint32_t modes[] = {0600, 0640, 0660, 0604, 0666, 0700, 0644};
    for (size_t u = 0; u < sizeof umasks / sizeof umasks[0]; u++) {
        umask(umasks[u]);
        for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++) {
            char name[32];
            snprintf(name, sizeof name, "lock-%03o-%03o", (unsigned)umasks[u], modes[k]);
            const char *path = P(name);
            surelock_ipc *m = OPEN(path, 0, modes[k], 0);
            struct stat st;
            assert_int_equal(stat(path, &st), 0);
            if ((st.st_mode & 07777) != modes[k])
                fail_msg("umask 0%03o, mode 0%03o: the file has mode 0%03o", (unsigned)umasks[u],
                         modes[k], (unsigned)st.st_mode & 07777);
            EXPECT_RC(surelock_ipc_lock(m), 0);
            EXPECT_RC(surelock_ipc_unlock(m), 0);
            EXPECT_RC(surelock_ipc_close(m), 0);
        }
    }
    /* NULL options: the default 0600, also under umask 0. */
    umask(0);
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(P("default"), NULL, &m), 0);
    struct stat st;
    assert_int_equal(stat(P("default"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void empty_placeholder_file_is_initialised_in_place(void **state)
{
    (void)state;
    const char *path = P("placeholder");
    touch(path, 0640); /* as `touch` or an installer would leave it; group-readable is fine */
    struct stat before;
    assert_int_equal(lstat(path, &before), 0);

    surelock_ipc *m = OPEN(path, 0, 0600, 100);
    struct stat after;
    assert_int_equal(lstat(path, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino); /* in place, not replaced */
    assert_int_equal(after.st_mode & 07777, 0640); /* an existing file's mode is left alone */
    assert_int_equal(after.st_size, file_size_for(100));
    bytes b = slurp(path);
    assert_memory_equal(b.data, "SURELOCK", 8);
    assert_int_equal(get32(&b, OFF_INIT_STATE), STATE_READY);
    assert_int_equal(get64(&b, OFF_PAYLOAD_SIZE), 100);
    free(b.data);

    size_t size = 0;
    unsigned char *payload = surelock_ipc_payload(m, &size);
    assert_non_null(payload);
    assert_int_equal(size, 100);
    for (size_t i = 0; i < size; i++) assert_int_equal(payload[i], 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* A placeholder opened without options gets the defaults (no payload). */
    touch(P("bare"), 0600);
    m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(P("bare"), NULL, &m), 0);
    assert_int_equal(lstat(P("bare"), &after), 0);
    assert_int_equal(after.st_size, HEADER_SIZE);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void unfinished_header_is_redone_and_an_all_zero_one_refused(void **state)
{
    (void)state;
    /* A header whose init_state never reached "ready" (its creator died while writing it):
     * whatever else it holds, it is initialised again. */
    bytes b = make_lock_file(P("model"), 0, 0);
    put32(&b, OFF_INIT_STATE, 0);
    put16(&b, OFF_POINTER_SIZE, 4);
    memcpy(b.data + OFF_LIBC, "musl\0\0\0\0", 8);
    memset(b.data + OFF_BOOT_ID, 'z', 36);
    put32(&b, OFF_RECOVERY_STATE, RECOVERY_NOT_RECOVERABLE);
    memset(b.data + OFF_MUTEX, 0xa5, 40); /* garbage where the mutex goes */
    const char *path = P("unfinished");
    spit(path, b.data, b.len, 0600);
    free(b.data);

    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    bytes after = slurp(path);
    assert_int_equal(get32(&after, OFF_INIT_STATE), STATE_READY);
    uint16_t ptr;
    memcpy(&ptr, after.data + OFF_POINTER_SIZE, 2);
    assert_int_equal(ptr, sizeof(void *));
    assert_string_equal((const char *)after.data + OFF_LIBC, "glibc");
    assert_int_equal(get32(&after, OFF_RECOVERY_STATE), RECOVERY_CONSISTENT);
    free(after.data);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* A stamp alone (the creator died right after its first write, before sizing the file). */
    bytes st = make_lock_file(P("model2"), 0, 0);
    put32(&st, OFF_INIT_STATE, 0);
    spit(P("stamp"), st.data, 16, 0600);
    free(st.data);
    m = OPEN(P("stamp"), 0, 0600, 0);
    assert_int_equal(file32(P("stamp"), OFF_INIT_STATE), STATE_READY);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* A header of zeros is not an unfinished lock file: initialisers write the stamp (magic,
     * version, not-ready state) before anything else, so zeros are someone else's data (a
     * disk image, a sparse file) and are refused untouched. */
    unsigned char *zeros = calloc(1, 2 * HEADER_SIZE);
    assert_non_null(zeros);
    spit(P("zeros"), zeros, 2 * HEADER_SIZE, 0600);
    free(zeros);
    snapshot z = take_snapshot(P("zeros"));
    surelock_ipc *none = SENTINEL;
    surelock_ipc_options zo = options(0, 0600, 0);
    EXPECT_RC(surelock_ipc_open(P("zeros"), &zo, &none), EPROTO);
    EXPECT_ERRMSG("magic");
    assert_ptr_equal(none, SENTINEL);
    EXPECT_UNCHANGED(P("zeros"), &z);
}

/* The mutex bytes of a file from this boot are checked: a mutex of another kind (not robust,
 * not process-shared, priority-protected: glibc would hang or abort on it) or one held by a
 * thread that does not exist and was never marked dead is refused untouched. */
static void a_file_whose_mutex_is_corrupt_is_eproto_and_untouched(void **state)
{
    (void)state;
    surelock_ipc_options o = options(0, 0600, 0);
    const size_t off_kind = OFF_MUTEX + 16, off_lock = OFF_MUTEX; /* glibc __kind, __lock */

    bytes b = make_lock_file(P("zeroed"), 0, 0);
    memset(b.data + OFF_MUTEX, 0, 40); /* a plain private mutex */
    spit(P("zeroed"), b.data, b.len, 0600);
    EXPECT_REFUSED(P("zeroed"), &o, EPROTO, "mutex");

    put32(&b, off_kind, 0xc0);          /* priority-protect: glibc asserts on it */
    put32(&b, off_lock, 0xfff80000u);
    spit(P("pp"), b.data, b.len, 0600);
    EXPECT_REFUSED(P("pp"), &o, EPROTO, "mutex");
    free(b.data);

    b = make_lock_file(P("ghost"), 0, 0);
    put32(&b, off_lock, 0x3ffffff0u);   /* a TID above any pid_max: no such thread */
    spit(P("ghost"), b.data, b.len, 0600);
    EXPECT_REFUSED(P("ghost"), &o, EPROTO, "does not exist");
    put32(&b, off_lock, 0x3ffffff0u | 0x40000000u); /* the same, marked dead: usable */
    spit(P("ghost"), b.data, b.len, 0600);
    free(b.data);
    surelock_ipc *m = OPEN(P("ghost"), 0, 0600, 0);
    EXPECT_RC(surelock_ipc_trylock(m), EOWNERDEAD);
    EXPECT_RC(surelock_ipc_consistent(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* =========================================================================================
 * Refusals: exact errno, precise errmsg, nothing modified
 * ========================================================================================= */

static void symlink_is_refused_with_eloop_and_nothing_is_followed_or_changed(void **state)
{
    (void)state;
    const char *target = P("target");
    const char *link = P("link");
    free(make_lock_file(target, 0, 0).data);
    assert_int_equal(symlink(target, link), 0);

    snapshot t = take_snapshot(target);
    surelock_ipc_options o = options(0, 0600, 0);
    EXPECT_REFUSED(link, &o, ELOOP, "symlink");
    EXPECT_REFUSED(link, NULL, ELOOP, "symlink");
    o = options(SURELOCK_IPC_NOCREATE | SURELOCK_IPC_ANY_OWNER, 0666, 0);
    EXPECT_REFUSED(link, &o, ELOOP, "symlink");
    EXPECT_UNCHANGED(target, &t);

    /* A dangling symlink is not followed to create its target. */
    const char *nowhere = P("nowhere");
    const char *dangling = P("dangling");
    assert_int_equal(symlink(nowhere, dangling), 0);
    EXPECT_REFUSED(dangling, NULL, ELOOP, "symlink");
    struct stat st;
    assert_int_equal(lstat(nowhere, &st), -1);

    /* A symlink to a placeholder does not get it initialised. */
    touch(P("empty"), 0600);
    assert_int_equal(symlink(P("empty"), P("to-empty")), 0);
    EXPECT_REFUSED(P("to-empty"), NULL, ELOOP, "symlink");
    assert_int_equal(lstat(P("empty"), &st), 0);
    assert_int_equal(st.st_size, 0);
}

static void file_owned_by_another_uid_is_eperm_unless_any_owner(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        fprintf(stderr, "not root: cannot give a file to another uid\n");
        skip();
    }
    const char *path = P("theirs");
    free(make_lock_file(path, 0, 0).data);
    if (chown(path, OTHER_UID, (gid_t)-1) != 0) {
        /* e.g. a user namespace where that uid is not mapped */
        fprintf(stderr, "cannot give a file to uid %d: %s\n", OTHER_UID, strerror(errno));
        skip();
    }

    surelock_ipc_options o = options(0, 0600, 0);
    char our_uid[16];
    snprintf(our_uid, sizeof our_uid, "%u", (unsigned)geteuid());
    EXPECT_REFUSED(path, &o, EPERM, "uid", "12345", our_uid);
    EXPECT_REFUSED(path, NULL, EPERM, "uid");
    o = options(SURELOCK_IPC_NOCREATE | SURELOCK_IPC_RECURSIVE, 0600, 0);
    EXPECT_REFUSED(path, &o, EPERM, "uid"); /* ownership is checked before anything else */

    /* An empty placeholder owned by someone else is not initialised either. */
    touch(P("their-placeholder"), 0600);
    assert_int_equal(chown(P("their-placeholder"), OTHER_UID, (gid_t)-1), 0);
    EXPECT_REFUSED(P("their-placeholder"), NULL, EPERM, "uid");

    /* SURELOCK_IPC_ANY_OWNER accepts it, and the lock works. */
    surelock_ipc *m = OPEN(path, SURELOCK_IPC_ANY_OWNER, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_int_equal(st.st_uid, OTHER_UID);

    /* ANY_OWNER does not lift the write-permission check. */
    assert_int_equal(chmod(path, 0660), 0);
    o = options(SURELOCK_IPC_ANY_OWNER, 0600, 0);
    EXPECT_REFUSED(path, &o, EPERM, "group");
    m = OPEN(path, SURELOCK_IPC_ANY_OWNER, 0660, 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void group_or_world_writable_file_is_eperm_unless_mode_grants_it(void **state)
{
    (void)state;
    static const struct {
        mode_t file_mode;
        uint32_t asked;
        int want;
        const char *who;
    } cases[] = {
        {0620, 0600, EPERM, "group"},    {0602, 0600, EPERM, "everyone"},
        {0622, 0600, EPERM, NULL},       {0666, 0660, EPERM, "everyone"},
        {0666, 0606, EPERM, "group"},    {0620, 0640, EPERM, "group"},
        {0660, 0660, 0, NULL},           {0666, 0666, 0, NULL},
        {0620, 0620, 0, NULL},           {0602, 0606, 0, NULL},
        {0644, 0600, 0, NULL},           {0640, 0600, 0, NULL},
        {0600, 0666, 0, NULL}, /* mode only permits: a stricter file is fine */
    };
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(chmod(path, cases[i].file_mode), 0);
        surelock_ipc_options o = options(0, cases[i].asked, 0);
        if (cases[i].want == EPERM) {
            char mode_text[8];
            snprintf(mode_text, sizeof mode_text, "%o", (unsigned)cases[i].file_mode);
            EXPECT_REFUSED(path, &o, EPERM, mode_text, cases[i].who ? cases[i].who : "write");
        } else {
            surelock_ipc *m = SENTINEL;
            int rc = surelock_ipc_open(path, &o, &m);
            if (rc != 0)
                fail_msg("file 0%o, mode 0%o: open returned %s; errmsg \"%s\"",
                         (unsigned)cases[i].file_mode, cases[i].asked, errname(rc),
                         surelock_errmsg());
            EXPECT_RC(surelock_ipc_lock(m), 0);
            EXPECT_RC(surelock_ipc_unlock(m), 0);
            EXPECT_RC(surelock_ipc_close(m), 0);
            struct stat st;
            assert_int_equal(stat(path, &st), 0);
            assert_int_equal(st.st_mode & 07777, cases[i].file_mode); /* never chmod'ed */
        }
    }
    /* An empty placeholder that others may write is not initialised. */
    touch(P("open-placeholder"), 0666);
    EXPECT_REFUSED(P("open-placeholder"), NULL, EPERM, "everyone");
}

static void directories_fifos_sockets_and_devices_are_eproto(void **state)
{
    (void)state;
    surelock_ipc_options plain = options(0, 0600, 0);
    surelock_ipc_options nocreate = options(SURELOCK_IPC_NOCREATE, 0600, 0);

    const char *dir = P("dir");
    assert_int_equal(mkdir(dir, 0700), 0);
    EXPECT_REFUSED(dir, &plain, EPROTO, "directory");
    EXPECT_REFUSED(dir, &nocreate, EPROTO, "directory");

    /* A FIFO with no writer: opening must neither block nor succeed. */
    const char *fifo = P("fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    EXPECT_REFUSED(fifo, &plain, EPROTO, "regular");
    EXPECT_REFUSED(fifo, &nocreate, EPROTO, "regular");

    const char *sock = P("sock");
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock);
    assert_int_equal(bind(s, (struct sockaddr *)&addr, sizeof addr), 0);
    EXPECT_REFUSED(sock, &plain, EPROTO, "regular");
    close(s);

    /* A /dev/null-like character device: made here when we may, else the real one. */
    const char *dev = P("null");
    if (mknod(dev, S_IFCHR | 0600, makedev(1, 3)) != 0) dev = "/dev/null";
    EXPECT_REFUSED(dev, &plain, EPROTO, "regular");
    EXPECT_REFUSED(dev, &nocreate, EPROTO, "regular");
}

static void short_truncated_or_padded_files_are_eproto(void **state)
{
    (void)state;
    bytes valid = make_lock_file(P("model"), 0, 100); /* 4096 + one page */
    assert_int_equal(valid.len, file_size_for(100));
    const size_t cuts[] = {1, 8, 100, HEADER_SIZE / 2, HEADER_SIZE - 1, HEADER_SIZE,
                           valid.len - 1};
    const char *path = P("cut");
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        spit(path, valid.data, cuts[i], 0600);
        EXPECT_REFUSED(path, NULL, EPROTO, NULL);
        surelock_ipc_options o = options(0, 0600, 100);
        EXPECT_REFUSED(path, &o, EPROTO, NULL);
    }
    /* Too long by one byte. */
    unsigned char *longer = calloc(1, valid.len + 1);
    assert_non_null(longer);
    memcpy(longer, valid.data, valid.len);
    spit(path, longer, valid.len + 1, 0600);
    EXPECT_REFUSED(path, NULL, EPROTO, "bytes");
    free(longer);

    /* Short files of zeros are not placeholders: only an empty file is. */
    unsigned char zeros[HEADER_SIZE] = {0};
    spit(path, zeros, 100, 0600);
    EXPECT_REFUSED(path, NULL, EPROTO, "short");
    spit(path, zeros, 1, 0600);
    EXPECT_REFUSED(path, NULL, EPROTO, "short");

    /* A header that says "no payload" in a file with a payload page. */
    bytes b = make_lock_file(P("model0"), 0, 0);
    unsigned char *padded = calloc(1, b.len + page_size());
    assert_non_null(padded);
    memcpy(padded, b.data, b.len);
    spit(path, padded, b.len + page_size(), 0600);
    EXPECT_REFUSED(path, NULL, EPROTO, "payload");
    free(padded);
    free(b.data);
    free(valid.data);
}

static void headers_of_another_format_abi_libc_or_pid_namespace_are_eproto(void **state)
{
    (void)state;
    bytes valid = make_lock_file(P("model"), 0, 0);
    const char *path = P("foreign");
    enum { MAGIC, VERSION, VERSION0, POINTER, MUTEX_SIZE, MUTEX_ALIGN, HEADER, LIBC, LIBC_EMPTY,
           PID_NS, FLAGS, RECOVERY, PAYLOAD, N_CASES };
    static const char *const words[N_CASES] = {
        "magic", "version", "version", "pointer", "pthread_mutex_t", "pthread_mutex_t",
        "header size", "libc", "libc", "namespace", "flags", "recovery", "payload"};
    for (int c = 0; c < N_CASES; c++) {
        bytes b = {malloc(valid.len), valid.len};
        assert_non_null(b.data);
        memcpy(b.data, valid.data, valid.len);
        switch (c) {
        case MAGIC: b.data[OFF_MAGIC] = 's'; break;
        case VERSION: put32(&b, OFF_FORMAT_VERSION, 2); break;
        case VERSION0: put32(&b, OFF_FORMAT_VERSION, 0); break;
        case POINTER: put16(&b, OFF_POINTER_SIZE, 4); break; /* a 32-bit process */
        case MUTEX_SIZE: put16(&b, OFF_MUTEX_SIZE, 24); break; /* i386's pthread_mutex_t */
        case MUTEX_ALIGN: put16(&b, OFF_MUTEX_ALIGN, 4); break;
        case HEADER: put16(&b, OFF_HEADER_SIZE, 8192); break;
        case LIBC: memcpy(b.data + OFF_LIBC, "musl\0\0\0\0\0\0\0\0\0\0\0\0", 16); break;
        case LIBC_EMPTY: memset(b.data + OFF_LIBC, 0, 16); break;
        case PID_NS: put64(&b, OFF_PID_NAMESPACE, get64(&b, OFF_PID_NAMESPACE) + 1); break;
        case FLAGS: put32(&b, OFF_FLAGS, 0x100); break;
        case RECOVERY: put32(&b, OFF_RECOVERY_STATE, 7); break;
        case PAYLOAD: put64(&b, OFF_PAYLOAD_SIZE, page_size()); break;
        }
        spit(path, b.data, b.len, 0600);
        free(b.data);
        surelock_ipc_options plain = options(0, 0600, 0);
        surelock_ipc_options any = options(SURELOCK_IPC_ANY_OWNER | SURELOCK_IPC_NOCREATE, 0666, 0);
        EXPECT_REFUSED(path, &plain, EPROTO, words[c]);
        EXPECT_REFUSED(path, &any, EPROTO, words[c]);
    }
    free(valid.data);
}

static void payload_size_differing_from_the_files_is_einval(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 64).data);
    surelock_ipc_options o = options(0, 0600, 128);
    EXPECT_REFUSED(path, &o, EINVAL, "payload_size", "128", "64");
    o = options(0, 0600, 1);
    EXPECT_REFUSED(path, &o, EINVAL, "payload_size");
    o = options(0, 0600, page_size()); /* same file size, other payload size */
    EXPECT_REFUSED(path, &o, EINVAL, "payload_size");

    /* 0 = as existing, and the exact size, both open it. */
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    size_t size = 0;
    assert_non_null(surelock_ipc_payload(m, &size));
    assert_int_equal(size, 64);
    EXPECT_RC(surelock_ipc_close(m), 0);
    m = OPEN(path, 0, 0600, 64);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void recursive_is_fixed_at_creation(void **state)
{
    (void)state;
    const char *plain = P("plain");
    free(make_lock_file(plain, 0, 0).data);
    surelock_ipc_options o = options(SURELOCK_IPC_RECURSIVE, 0600, 0);
    EXPECT_REFUSED(plain, &o, EINVAL, "RECURSIVE");
    o = options(SURELOCK_IPC_RECURSIVE | SURELOCK_IPC_NOCREATE, 0600, 0);
    EXPECT_REFUSED(plain, &o, EINVAL, "RECURSIVE");

    /* A recursive file records the flag, and opening it without the flag keeps it recursive. */
    const char *rec = P("recursive");
    bytes b = make_lock_file(rec, SURELOCK_IPC_RECURSIVE, 0);
    assert_int_equal(get32(&b, OFF_FLAGS), SURELOCK_IPC_RECURSIVE);
    free(b.data);
    surelock_ipc *m = OPEN(rec, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_lock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
    m = OPEN(rec, SURELOCK_IPC_RECURSIVE, 0600, 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* A process that cannot reach the file gets the system's own error from open. */
static struct access_child {
    const char *path;
} access_child;

static int access_child_main(void *p)
{
    struct access_child *a = p;
    if (setgid(OTHER_UID) != 0 || setuid(OTHER_UID) != 0) return 77; /* cannot drop to it */
    surelock_ipc *m = SENTINEL;
    CHILD_EXPECT_RC(surelock_ipc_open(a->path, NULL, &m), EACCES);
    CHILD_CHECK(m == SENTINEL);
    CHILD_CHECK(strstr(surelock_errmsg(), a->path) != NULL);
    return 0;
}

static void system_errors_from_open_are_passed_through(void **state)
{
    (void)state;
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(P("no-such-dir/lock"), NULL, &m), ENOENT);
    assert_ptr_equal(m, SENTINEL);
    EXPECT_ERRMSG("no-such-dir");

    touch(P("file"), 0600);
    EXPECT_RC(surelock_ipc_open(P("file/lock"), NULL, &m), ENOTDIR);
    assert_ptr_equal(m, SENTINEL);

    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    EXPECT_RC(surelock_ipc_open(P(longname), NULL, &m), ENAMETOOLONG);

    if (geteuid() == 0) {
        /* A file in a directory only root may enter, opened by another uid: EACCES. */
        const char *locked_dir = P("private");
        assert_int_equal(mkdir(locked_dir, 0700), 0);
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/lock", locked_dir);
        free(make_lock_file(path, 0, 0).data);
        access_child.path = path;
        pid_t pid = spawn(access_child_main, &access_child);
        int status = child_reap_at(__LINE__, pid, WAIT_LIMIT_MS);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
            fprintf(stderr, "cannot switch to uid %d: EACCES not checked\n", OTHER_UID);
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("the child under uid %d failed (wait status 0x%x)", OTHER_UID, status);
    }
}

/* Creating the file is a success like any other: errmsg is not touched. */
static void a_successful_open_that_creates_the_file_leaves_errmsg_alone(void **state)
{
    (void)state;
    EXPECT_RC(surelock_ipc_close(NULL), EINVAL);
    char before[256];
    snprintf(before, sizeof before, "%s", surelock_errmsg());
    surelock_ipc *m = OPEN(P("fresh"), 0, 0600, 0);
    assert_string_equal(surelock_errmsg(), before);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* =========================================================================================
 * A file from before a reboot
 * ========================================================================================= */

static void stale_boot_id_is_reinitialised_and_the_lock_is_usable(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    char boot_id[40];
    this_boot_id(boot_id);

    /* A snapshot of the file while another process holds it: its mutex names a live holder.
     * Written back under another boot id, that holder "belongs to the previous boot". */
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    bytes held = slurp(path);
    assert_int_equal((int32_t)get32(&held, OFF_HOLDER_TID), h.pid);
    const uint32_t states[] = {RECOVERY_CONSISTENT, RECOVERY_NEEDED, RECOVERY_NOT_RECOVERABLE};
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "stale-%d", i);
        const char *stale = P(name);
        bytes b = {malloc(held.len), held.len};
        assert_non_null(b.data);
        memcpy(b.data, held.data, held.len);
        memset(b.data + OFF_BOOT_ID, 0, 40);
        memcpy(b.data + OFF_BOOT_ID, "00000000-0000-4000-8000-000000000000", 36);
        put32(&b, OFF_RECOVERY_STATE, states[i]);
        put64(&b, OFF_OWNER_DEATHS, 5);
        spit(stale, b.data, b.len, 0600);
        free(b.data);

        surelock_ipc *m = OPEN(stale, 0, 0600, 0);
        bytes now = slurp(stale);
        assert_memory_equal(now.data + OFF_BOOT_ID, boot_id, strlen(boot_id) + 1);
        assert_int_equal(get32(&now, OFF_RECOVERY_STATE), RECOVERY_CONSISTENT);
        assert_int_equal(get32(&now, OFF_HOLDER_TID), 0);
        free(now.data);
        /* Not EBUSY (the old holder is gone with its boot), not EOWNERDEAD, not
         * ENOTRECOVERABLE: a fresh, free lock. */
        EXPECT_RC(surelock_ipc_trylock(m), 0);
        assert_int_equal(surelock_ipc_needs_recovery(m), 0);
        EXPECT_RC(surelock_ipc_unlock(m), 0);
        EXPECT_IN_ANOTHER_PROCESS(stale, 0);
        EXPECT_RC(surelock_ipc_close(m), 0);
    }
    free(held.data);
    HOLDER_RELEASE(&h);
}

/* =========================================================================================
 * surelock_ipc_unlink
 * ========================================================================================= */

#define EXPECT_UNLINK_REFUSED(path, want, word)                                                \
    do {                                                                                       \
        snapshot s_ = take_snapshot(path);                                                     \
        EXPECT_RC(surelock_ipc_unlink(path), want);                                            \
        EXPECT_ERRMSG(word);                                                                   \
        if (strstr(surelock_errmsg(), path) == NULL)                                           \
            fail_msg("errmsg \"%s\" does not name %s", surelock_errmsg(), path);               \
        EXPECT_UNCHANGED(path, &s_);                                                           \
    } while (0)

static void unlink_removes_a_lock_file_and_refuses_symlinks_and_other_files(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    EXPECT_RC(surelock_ipc_unlink(path), 0);
    struct stat st;
    assert_int_equal(lstat(path, &st), -1);
    assert_int_equal(errno, ENOENT);
    EXPECT_RC(surelock_ipc_unlink(path), ENOENT);
    EXPECT_ERRMSG("lock");

    free(make_lock_file(path, 0, 0).data);
    assert_int_equal(symlink(path, P("link")), 0);
    EXPECT_UNLINK_REFUSED(P("link"), ELOOP, "symlink");
    assert_int_equal(lstat(path, &st), 0); /* the target stays too */

    spit(P("text"), "hello, world\n", 13, 0600);
    EXPECT_UNLINK_REFUSED(P("text"), EPROTO, "not a surelock");
    unsigned char almost[HEADER_SIZE] = "SURELOC"; /* 7 of 8 magic bytes */
    spit(P("almost"), almost, sizeof almost, 0600);
    EXPECT_UNLINK_REFUSED(P("almost"), EPROTO, "not a surelock");
    assert_int_equal(mkdir(P("dir"), 0700), 0);
    EXPECT_UNLINK_REFUSED(P("dir"), EPROTO, "not a surelock");
    assert_int_equal(mkfifo(P("fifo"), 0600), 0);
    EXPECT_UNLINK_REFUSED(P("fifo"), EPROTO, "not a surelock");

    /* Removing it while a handle is open is allowed (never done implicitly). */
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_unlink(path), 0);
    assert_int_equal(lstat(path, &st), -1);
    EXPECT_RC(surelock_ipc_close(m), 0);
    assert_int_equal(lstat(path, &st), -1); /* and close does not bring it back */
}

/* =========================================================================================
 * Faults from the adversarial review (issue 9): two holders, unbounded waits, messages
 * ========================================================================================= */

/* An opener whose boot id differs from the file's (another mount namespace's view of /proc)
 * must not reset a lock another process holds: a file open elsewhere is in use in this boot,
 * so it is used as it is. */
static void an_opener_seeing_another_boot_id_never_resets_a_lock_held_elsewhere(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    static const char other_boot[40] = "00000000-0000-4000-8000-000000000000";
    poke(path, OFF_BOOT_ID, other_boot, sizeof other_boot);

    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY); /* one holder, still */
    EXPECT_IN_ANOTHER_PROCESS_TRY(path, EBUSY);
    bytes b = slurp(path);
    assert_memory_equal(b.data + OFF_BOOT_ID, other_boot, sizeof other_boot); /* as it is */
    assert_int_equal((int32_t)get32(&b, OFF_HOLDER_TID), h.pid);
    free(b.data);
    HOLDER_RELEASE(&h);
    EXPECT_RC(surelock_ipc_trylock(m), 0); /* a plain release: no death, nothing to recover */
    assert_int_equal(surelock_ipc_needs_recovery(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);

    /* Open nowhere, the same file is from another boot and is reset. */
    surelock_ipc *n = OPEN(path, 0, 0600, 0);
    char boot_id[40];
    this_boot_id(boot_id);
    b = slurp(path);
    assert_memory_equal(b.data + OFF_BOOT_ID, boot_id, strlen(boot_id) + 1);
    free(b.data);
    EXPECT_RC(surelock_ipc_close(n), 0);
}

/* No re-initialisation of any kind while another handle is open: a file emptied under a live
 * handle is refused, not rebuilt into a second, independent mutex. */
static void a_file_emptied_while_open_elsewhere_is_refused_not_reinitialised(void **state)
{
    (void)state;
    const char *path = P("lock");
    surelock_ipc *a = OPEN(path, 0, 0600, 0);
    assert_int_equal(truncate(path, 0), 0);
    surelock_ipc_options o = options(0, 0600, 0);
    EXPECT_REFUSED(path, &o, EPROTO, "open", "empty");
    EXPECT_RC(surelock_ipc_close(a), 0); /* its mapping is gone: only unmapped, never read */
    surelock_ipc *b = OPEN(path, 0, 0600, 0); /* open nowhere now: initialised */
    EXPECT_RC(surelock_ipc_trylock(b), 0);
    EXPECT_RC(surelock_ipc_unlock(b), 0);
    EXPECT_RC(surelock_ipc_close(b), 0);
}

/* A corrupt lock word naming a live process that is no surelock holder would make every lock
 * wait forever: open refuses it, untouched. */
static void a_lock_word_naming_a_live_unrelated_process_is_eproto_and_untouched(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    pid_t sleeper = spawn(sleeper_main, NULL);
    surelock_ipc_options o = options(0, 0600, 0);
    poke32(path, OFF_MUTEX, (uint32_t)sleeper); /* __lock: the owner's TID */
    poke32(path, OFF_HOLDER_TID, 0);
    EXPECT_REFUSED(path, &o, EPROTO, "not a holder", "corrupt");
    /* The header's record alone does not make a process a holder either. */
    poke32(path, OFF_HOLDER_TID, (uint32_t)sleeper);
    EXPECT_REFUSED(path, &o, EPROTO, "not a holder", "corrupt");
    KILL_CHILD(sleeper);

    /* Thread 1 (init), whose memory map even root may be denied (a container): then the
     * header's record is the evidence, and a record that never agrees within the check's
     * bound is a clear ETIMEDOUT naming the cause, never a wait without end. */
    if (kill(1, 0) != 0 && errno == ESRCH) return;
    poke32(path, OFF_MUTEX, 1);
    poke32(path, OFF_HOLDER_TID, 0);
    int maps = open("/proc/1/maps", O_RDONLY | O_CLOEXEC);
    char byte;
    bool readable = maps >= 0 && read(maps, &byte, 1) == 1;
    if (maps >= 0) close(maps);
    if (readable)
        EXPECT_REFUSED(path, &o, EPROTO, "not a holder", "corrupt");
    else
        EXPECT_REFUSED(path, &o, ETIMEDOUT, "/proc/1/maps", "corrupt");
}

/* The lock word is kernel-maintained; holder_tid is stored by the holder just after its
 * acquire. A holder seen in that window (word set, record not yet) is a holder: its process
 * maps the file. */
static void a_holder_not_yet_recorded_in_the_header_is_still_a_holder(void **state)
{
    (void)state;
    const char *path = P("lock");
    holder_proc h;
    HOLDER_START(&h, path, 0, 0);
    poke32(path, OFF_HOLDER_TID, 0);
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_trylock(m), EBUSY);
    HOLDER_RELEASE(&h);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

/* ---- a hostile flock holder ---- */

static struct open_probe {
    const char *path;
    int rc;
    uint64_t took_ns;
    char errmsg[ERRMSG_SIZE];
} open_probe;

static void open_probe_body(void *arg)
{
    (void)arg;
    surelock_ipc *m = NULL;
    uint64_t t0 = now_ns();
    open_probe.rc = surelock_ipc_open(open_probe.path, NULL, &m);
    open_probe.took_ns = now_ns() - t0;
    snprintf(open_probe.errmsg, sizeof open_probe.errmsg, "%s", surelock_errmsg());
    if (open_probe.rc == 0) surelock_ipc_close(m);
}

/* Whether some process holds an exclusive flock on path. */
static bool flock_held_elsewhere(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool held = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

static int flock_holder_main(void *p)
{
    int fd = open((const char *)p, O_RDONLY | O_CLOEXEC);
    CHILD_CHECK(fd >= 0);
    CHILD_CHECK(flock(fd, LOCK_EX) == 0);
    for (;;) pause();
    return 0;
}

static int flock_tool_main(void *p)
{
    /* flock(1) from util-linux, as a shell user would run it: flock FILE sleep 60. Its own
     * process group: the sleep inherits the flock and must be killed with it. */
    setpgid(0, 0);
    execlp("flock", "flock", (const char *)p, "sleep", "60", (char *)NULL);
    fprintf(stderr, "cannot run flock(1): %s\n", strerror(errno));
    return 77;
}

/* Open gives up with ETIMEDOUT after its bound (5 s), naming the cause, while a flock is held
 * on the file; and works again once it is gone. */
static void expect_open_bounded_by_a_flock_holder(const char *path, pid_t holder)
{
    uint64_t t0 = now_ns();
    while (!flock_held_elsewhere(path)) {
        int status;
        if (waitpid(holder, &status, WNOHANG) == holder)
            fail_msg("the flock holder ended (status 0x%x) before it held the file", status);
        if (now_ns() - t0 > WAIT_LIMIT_MS * MS) fail_msg("the flock holder never took it");
        sleep_ms(5);
    }
    snapshot before = take_snapshot(path);
    open_probe = (struct open_probe){.path = path, .rc = -1};
    helper t;
    RUN_IN_NEW_THREAD(&t, open_probe_body, NULL);
    EXPECT_SAVED_RC(open_probe.rc, ETIMEDOUT, open_probe.errmsg);
    if (open_probe.took_ns < 4000 * MS || open_probe.took_ns > 5000 * MS + TIMED_WAIT_CEILING_NS)
        fail_msg("open gave up after %llu ms; its bound is 5 s",
                 (unsigned long long)(open_probe.took_ns / MS));
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)holder);
    EXPECT_TEXT(open_probe.errmsg, "flock");
    EXPECT_TEXT(open_probe.errmsg, pid);
    EXPECT_UNCHANGED(path, &before);
    kill(-holder, SIGKILL); /* flock(1)'s sleep, which holds the flock too */
    KILL_CHILD(holder);
    t0 = now_ns();
    while (flock_held_elsewhere(path))
        if (now_ns() - t0 > WAIT_LIMIT_MS * MS) fail_msg("the flock outlived its holders");
    surelock_ipc *m = OPEN(path, 0, 0600, 0);
    EXPECT_RC(surelock_ipc_trylock(m), 0);
    EXPECT_RC(surelock_ipc_unlock(m), 0);
    EXPECT_RC(surelock_ipc_close(m), 0);
}

static void open_gives_up_within_its_bound_on_a_hostile_flock_holder_and_names_it(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    expect_open_bounded_by_a_flock_holder(path, spawn(flock_holder_main, (void *)path));
    if (access("/usr/bin/flock", X_OK) != 0 && access("/bin/flock", X_OK) != 0) {
        print_message("flock(1) is not installed: only the flock(2) holder was tried\n");
        return;
    }
    expect_open_bounded_by_a_flock_holder(path, spawn(flock_tool_main, (void *)path));
}

/* ---- messages ---- */

/* With a path too long to fit beside it, the reason survives whole; the path keeps its tail
 * (the file name) behind "...". */
static void messages_keep_their_reason_when_the_path_is_too_long_to_fit(void **state)
{
    (void)state;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", test_dir);
    for (int level = 0; level < 3; level++) {
        size_t n = strlen(dir);
        dir[n] = '/';
        memset(dir + n + 1, 'a' + level, 120);
        dir[n + 121] = '\0';
        assert_int_equal(mkdir(dir, 0700), 0);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/the-lock-file", dir);
    surelock_ipc_options o = options(SURELOCK_IPC_NOCREATE, 0600, 0);
    surelock_ipc *m = SENTINEL;
    EXPECT_RC(surelock_ipc_open(path, &o, &m), ENOENT);
    const char *msg = surelock_errmsg();
    if (strstr(msg, "no such lock file (SURELOCK_IPC_NOCREATE)") == NULL ||
        strncmp(msg, "...", 3) != 0 || strstr(msg, "/the-lock-file: ") == NULL)
        fail_msg("errmsg \"%s\" lost its reason or the path's tail", msg);
    assert_true(strlen(msg) < 256);

    assert_int_equal(mkdir(path, 0700), 0);
    o = options(0, 0600, 0);
    EXPECT_RC(surelock_ipc_open(path, &o, &m), EPROTO);
    msg = surelock_errmsg();
    if (strstr(msg, "is a directory, not a lock file") == NULL || strncmp(msg, "...", 3) != 0)
        fail_msg("errmsg \"%s\" lost its reason", msg);
    assert_ptr_equal(m, SENTINEL);
}

/* A payload size too large for any file is reported as the number in the header, never as the
 * negative result of an overflowed size computation. */
static void a_corrupt_payload_size_is_never_printed_as_a_negative_number(void **state)
{
    (void)state;
    const char *path = P("lock");
    free(make_lock_file(path, 0, 0).data);
    const uint64_t sizes[] = {UINT64_MAX, UINT64_MAX - 4096, (uint64_t)INT64_MAX,
                              (uint64_t)INT64_MAX - 4096 * 2};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        poke(path, OFF_PAYLOAD_SIZE, &sizes[i], sizeof sizes[i]);
        surelock_ipc_options o = options(0, 0600, 0);
        EXPECT_REFUSED(path, &o, EPROTO, "payload");
        const char *reason = surelock_errmsg() + strlen(path) + 2;
        for (const char *c = reason; *c; c++)
            if (*c == '-' && c[1] >= '0' && c[1] <= '9')
                fail_msg("errmsg \"%s\" prints a negative number", surelock_errmsg());
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(open_creates_a_lock_file_with_the_documented_header),
        TEST(null_handles_paths_and_out_pointers_are_einval),
        TEST(options_too_small_unknown_flags_and_mode_beyond_0777_are_einval),
        TEST(missing_file_with_nocreate_is_enoent_and_creates_nothing),
        TEST(created_file_has_exactly_the_requested_mode_whatever_the_umask),
        TEST(empty_placeholder_file_is_initialised_in_place),
        TEST(unfinished_header_is_redone_and_an_all_zero_one_refused),
        TEST(a_file_whose_mutex_is_corrupt_is_eproto_and_untouched),
        TEST(symlink_is_refused_with_eloop_and_nothing_is_followed_or_changed),
        TEST(file_owned_by_another_uid_is_eperm_unless_any_owner),
        TEST(group_or_world_writable_file_is_eperm_unless_mode_grants_it),
        TEST(directories_fifos_sockets_and_devices_are_eproto),
        TEST(short_truncated_or_padded_files_are_eproto),
        TEST(headers_of_another_format_abi_libc_or_pid_namespace_are_eproto),
        TEST(payload_size_differing_from_the_files_is_einval),
        TEST(recursive_is_fixed_at_creation),
        TEST(system_errors_from_open_are_passed_through),
        TEST(a_successful_open_that_creates_the_file_leaves_errmsg_alone),
        TEST(stale_boot_id_is_reinitialised_and_the_lock_is_usable),
        TEST(unlink_removes_a_lock_file_and_refuses_symlinks_and_other_files),
        TEST(an_opener_seeing_another_boot_id_never_resets_a_lock_held_elsewhere),
        TEST(a_file_emptied_while_open_elsewhere_is_refused_not_reinitialised),
        TEST(a_lock_word_naming_a_live_unrelated_process_is_eproto_and_untouched),
        TEST(a_holder_not_yet_recorded_in_the_header_is_still_a_holder),
        TEST(open_gives_up_within_its_bound_on_a_hostile_flock_holder_and_names_it),
        TEST(messages_keep_their_reason_when_the_path_is_too_long_to_fit),
        TEST(a_corrupt_payload_size_is_never_printed_as_a_negative_number),
    };
    return cmocka_run_group_tests_name("ipc_open", tests, ipc_group_setup, watchdog_stop);
}
