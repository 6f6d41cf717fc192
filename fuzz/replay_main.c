/*
 * Corpus replay: a main() for libFuzzer harnesses when libFuzzer is not used (gcc builds, the
 * test suite). Every argument is a file or a directory; every regular file named, or found
 * directly in a named directory (in name order, hidden files skipped), is read whole and
 * passed once to LLVMFuzzerTestOneInput. A harness that finds a bug aborts, failing the run.
 * Exits 1 on an unreadable argument or when no input at all was found (an empty corpus would
 * otherwise make the test pass while testing nothing).
 */
#define _POSIX_C_SOURCE 200809L /* scandir */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (buf == NULL) {
            fprintf(stderr, "%s: out of memory\n", path);
            fclose(f);
            return -1;
        }
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        cap *= 2;
        uint8_t *bigger = realloc(buf, cap);
        if (bigger == NULL) free(buf);
        buf = bigger;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        fprintf(stderr, "%s: read error\n", path);
        free(buf);
        return -1;
    }
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int not_hidden(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

int main(int argc, char **argv)
{
    long inputs = 0;
    int failed = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE_OR_DIRECTORY...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            failed = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]) == 0) inputs++; else failed = 1;
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, not_hidden, by_name);
        if (n < 0) {
            perror(argv[i]);
            failed = 1;
            continue;
        }
        for (int j = 0; j < n; j++) {
            size_t len = strlen(argv[i]) + strlen(names[j]->d_name) + 2;
            char *path = malloc(len);
            if (path == NULL) {
                fprintf(stderr, "out of memory\n");
                return 1;
            }
            snprintf(path, len, "%s/%s", argv[i], names[j]->d_name);
            free(names[j]);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                if (replay_file(path) == 0) inputs++; else failed = 1;
            }
            free(path);
        }
        free(names);
    }
    printf("replayed %ld input%s\n", inputs, inputs == 1 ? "" : "s");
    if (inputs == 0) {
        fprintf(stderr, "no inputs found\n");
        return 1;
    }
    return failed;
}
