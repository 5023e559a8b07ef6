/* test_fileutil.c - the folder and file operations checkpoints rely on, in a scratch folder. */
#include "error.h"
#include "fileutil.h"
#include "test_util.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[PATH_MAX];

/* base + "/" + rel, in one of a few rotating buffers so several can be live in one call. */
static const char *at(const char *rel)
{
    static char bufs[4][PATH_MAX];
    static int next = 0;
    char *b = bufs[next++ % 4];
    if (snprintf(b, PATH_MAX, "%s/%s", base, rel) >= PATH_MAX)
        abort(); /* the scratch folder name is short; this cannot happen */
    return b;
}

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static int error_names(const char *path)
{
    int ok = strstr(loom_error_message(), path) != NULL;
    if (!ok) fprintf(stderr, "message '%s' does not name '%s'\n", loom_error_message(), path);
    return ok;
}

static void touch(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(content, f);
        fclose(f);
    }
}

static void test_mkdir_p(void)
{
    CHECK(loom_mkdir_p(at("a/b/c")) == LOOM_OK);
    CHECK(is_dir(at("a/b/c")));
    CHECK(loom_mkdir_p(at("a/b/c")) == LOOM_OK); /* already there */
    CHECK(loom_mkdir_p(at("x//y/z/")) == LOOM_OK);
    CHECK(is_dir(at("x/y/z")));

    touch(at("plain"), "not a folder");
    CHECK(loom_mkdir_p(at("plain/sub")) == LOOM_E_IO);
    CHECK(error_names(at("plain/sub")));
    CHECK(!exists(at("plain/sub")));
    CHECK(loom_mkdir_p("") == LOOM_E_INVALID);
}

static void test_write_read(void)
{
    char *data = NULL;
    size_t len = 0;
    const char *f = at("a/file.json");
    CHECK(loom_write_file_atomic(f, "hello", 5) == LOOM_OK);
    CHECK(!exists(at("a/file.json.tmp")));
    CHECK(loom_read_file(f, &data, &len) == LOOM_OK);
    CHECK(len == 5 && data && memcmp(data, "hello", 6) == 0); /* 6: the NUL too */
    free(data);

    /* Replacing is whole-file: a shorter new content leaves no tail of the old one. */
    CHECK(loom_write_file_atomic(f, "bye", 3) == LOOM_OK);
    CHECK(loom_read_file(f, &data, &len) == LOOM_OK);
    CHECK(len == 3 && data && strcmp(data, "bye") == 0);
    free(data);

    loom_file_part parts[3] = {{"ab", 2}, {NULL, 0}, {"cde", 3}};
    CHECK(loom_write_file_atomicv(f, parts, 3) == LOOM_OK);
    CHECK(loom_read_file(f, &data, &len) == LOOM_OK);
    CHECK(len == 5 && data && strcmp(data, "abcde") == 0);
    free(data);

    CHECK(loom_write_file_atomic(at("a/empty"), "", 0) == LOOM_OK);
    CHECK(loom_read_file(at("a/empty"), &data, &len) == LOOM_OK);
    CHECK(len == 0 && data && data[0] == '\0');
    free(data);

    /* A bigger file, so a short read() or a wrong size hint would show. */
    size_t big = 3 * 1024 * 1024 + 17;
    char *payload = malloc(big);
    CHECK(payload != NULL);
    if (payload) {
        for (size_t i = 0; i < big; i++)
            payload[i] = (char)('a' + i % 26);
        CHECK(loom_write_file_atomic(at("a/big"), payload, big) == LOOM_OK);
        CHECK(loom_read_file(at("a/big"), &data, &len) == LOOM_OK);
        CHECK(len == big && data && memcmp(data, payload, big) == 0 && data[big] == '\0');
        free(data);
        free(payload);
    }

    /* Files whose size stat() does not know: /proc reports 0 and is read until EOF. */
    if (exists("/proc/self/maps")) {
        CHECK(loom_read_file("/proc/self/maps", &data, &len) == LOOM_OK);
        CHECK(len > 0 && data && strlen(data) == len);
        free(data);
    }

    CHECK(loom_write_file_atomic(at("no/such/dir/f"), "x", 1) == LOOM_E_IO);
    CHECK(error_names(at("no/such/dir/f")));
    CHECK(loom_read_file(at("missing"), &data, &len) == LOOM_E_NOT_FOUND);
    CHECK(error_names(at("missing")));
    CHECK(data == NULL && len == 0);
    CHECK(loom_read_file(at("a"), &data, &len) == LOOM_E_IO);
    CHECK(error_names(at("a")));
}

static void print_lines(FILE *f, const void *context)
{
    for (int i = 0; i < *(const int *)context; i++)
        fprintf(f, "line %d\n", i);
}

/* Text printed to a stream lands whole, replacing the old file, through the .tmp file; a
 * folder that cannot take it leaves nothing and names the path. */
static void test_write_text(void)
{
    char *data = NULL;
    size_t len = 0;
    const int three = 3, none = 0;
    CHECK(loom_write_file_atomic(at("a/text"), "old content that is longer", 26) == LOOM_OK);
    CHECK(loom_write_text_atomic(at("a/text"), print_lines, &three) == LOOM_OK);
    CHECK(!exists(at("a/text.tmp")));
    CHECK(loom_read_file(at("a/text"), &data, &len) == LOOM_OK);
    CHECK(len == 21 && data && strcmp(data, "line 0\nline 1\nline 2\n") == 0);
    free(data);
    CHECK(loom_write_text_atomic(at("a/text"), print_lines, &none) == LOOM_OK);
    CHECK(loom_read_file(at("a/text"), &data, &len) == LOOM_OK);
    CHECK(len == 0);
    free(data);
    CHECK(loom_write_text_atomic(at("no/such/dir/text"), print_lines, &three) == LOOM_E_IO);
    CHECK(error_names(at("no/such/dir/text")));
    CHECK(!exists(at("no/such/dir/text")));
}

/* Bounded reads: a file over the limit, a FIFO with no writer and a device are refused at
 * once with a message naming them; a file of exactly the limit is read whole. */
static void test_bounded_read(void)
{
    char *data = NULL;
    size_t len = 0;
    touch(at("ten"), "0123456789");
    CHECK(loom_read_file_max(at("ten"), 10, &data, &len) == LOOM_OK && len == 10 && data && data[10] == '\0');
    free(data);
    data = NULL;
    CHECK(loom_read_file_max(at("ten"), 9, &data, &len) == LOOM_E_IO && data == NULL);
    CHECK(error_names(at("ten")) && strstr(loom_error_message(), "10 bytes") && strstr(loom_error_message(), " 9 "));

    CHECK(mkfifo(at("fifo"), 0600) == 0);
    CHECK(loom_read_file(at("fifo"), &data, &len) == LOOM_E_IO && data == NULL); /* returns: no writer needed */
    CHECK(error_names(at("fifo")) && strstr(loom_error_message(), "FIFO"));
    if (exists("/dev/zero")) {
        CHECK(loom_read_file("/dev/zero", &data, &len) == LOOM_E_IO && data == NULL);
        CHECK(strstr(loom_error_message(), "/dev/zero") && strstr(loom_error_message(), "character device"));
    }
    int fd = -1;
    uint64_t size = 0;
    CHECK(loom_open_regular(at("ten"), &fd, &size) == LOOM_OK && fd >= 0 && size == 10);
    if (fd >= 0) close(fd);
    CHECK(loom_open_regular(at("fifo"), &fd, &size) == LOOM_E_IO && fd == -1);
    CHECK(loom_open_regular(at("nothing-here"), &fd, &size) == LOOM_E_NOT_FOUND);
    unlink(at("fifo"));
    unlink(at("ten"));
}

static void test_remove_tree(void)
{
    CHECK(loom_mkdir_p(at("t/x/y/z")) == LOOM_OK);
    CHECK(loom_mkdir_p(at("keep/inner")) == LOOM_OK);
    touch(at("t/x/y/z/deep"), "1");
    touch(at("t/top"), "2");
    touch(at("keep/inner/precious"), "3");
    /* Links must go as links: following them would delete the target's contents. */
    CHECK(symlink(at("keep"), at("t/link_to_dir")) == 0);
    CHECK(symlink(at("keep/inner/precious"), at("t/x/link_to_file")) == 0);
    CHECK(symlink(at("nowhere"), at("t/dangling")) == 0);

    CHECK(loom_remove_tree(at("t")) == LOOM_OK);
    CHECK(!exists(at("t")));
    CHECK(exists(at("keep/inner/precious")));

    CHECK(loom_remove_tree(at("t")) == LOOM_OK); /* gone already */
    touch(at("lone"), "x");
    CHECK(loom_remove_tree(at("lone")) == LOOM_OK);
    CHECK(!exists(at("lone")));

    CHECK(loom_remove_tree("") == LOOM_E_INVALID);
    CHECK(loom_remove_tree("/") == LOOM_E_INVALID);
    CHECK(loom_remove_tree("//") == LOOM_E_INVALID);
    CHECK(loom_remove_tree(".") == LOOM_E_INVALID);
    CHECK(loom_remove_tree(at("keep/..")) == LOOM_E_INVALID);
    CHECK(loom_remove_tree(at("keep/.")) == LOOM_E_INVALID);
    CHECK(exists(at("keep/inner/precious")));

    /* A folder we may not read cannot be emptied: the error names it. Root ignores modes. */
    if (geteuid() != 0) {
        CHECK(loom_mkdir_p(at("locked/sub")) == LOOM_OK);
        touch(at("locked/sub/f"), "x");
        CHECK(chmod(at("locked/sub"), 0) == 0);
        CHECK(loom_remove_tree(at("locked")) == LOOM_E_IO);
        CHECK(error_names(at("locked/sub")));
        CHECK(chmod(at("locked/sub"), 0755) == 0);
        CHECK(loom_remove_tree(at("locked")) == LOOM_OK);
        CHECK(!exists(at("locked")));
    }
}

static void test_dir_is_empty(void)
{
    int empty = -1;
    CHECK(loom_dir_is_empty(at("nothing-here"), &empty) == LOOM_OK && empty == 1);
    CHECK(loom_mkdir_p(at("e")) == LOOM_OK);
    CHECK(loom_dir_is_empty(at("e"), &empty) == LOOM_OK && empty == 1);
    touch(at("e/.hidden"), "x");
    CHECK(loom_dir_is_empty(at("e"), &empty) == LOOM_OK && empty == 0);
    touch(at("e-file"), "x");
    CHECK(loom_dir_is_empty(at("e-file"), &empty) == LOOM_E_IO);
    CHECK(error_names(at("e-file")));
    CHECK(strstr(loom_error_message(), "exists and is not a folder") != NULL);
    /* A file on the way to it ("--output_dir afile/sub") is named, not the path itself. */
    CHECK(loom_dir_is_empty(at("e-file/sub"), &empty) == LOOM_E_IO);
    CHECK(strstr(loom_error_message(), "on the way is a file") != NULL && error_names(at("e-file")));
}

static void test_rename_dir(void)
{
    CHECK(loom_mkdir_p(at("out/checkpoint-5.tmp")) == LOOM_OK);
    touch(at("out/checkpoint-5.tmp/weights"), "w");
    CHECK(loom_rename_dir_atomic(at("out/checkpoint-5.tmp"), at("out/checkpoint-5")) == LOOM_OK);
    CHECK(!exists(at("out/checkpoint-5.tmp")));
    CHECK(exists(at("out/checkpoint-5/weights")));

    /* An existing final folder, full or empty, is never replaced. */
    CHECK(loom_mkdir_p(at("out/again.tmp")) == LOOM_OK);
    touch(at("out/again.tmp/new"), "n");
    CHECK(loom_rename_dir_atomic(at("out/again.tmp"), at("out/checkpoint-5")) == LOOM_E_IO);
    CHECK(error_names(at("out/checkpoint-5")));
    CHECK(exists(at("out/checkpoint-5/weights")) && exists(at("out/again.tmp/new")));

    CHECK(loom_mkdir_p(at("out/empty-final")) == LOOM_OK);
    CHECK(loom_rename_dir_atomic(at("out/again.tmp"), at("out/empty-final")) == LOOM_E_IO);
    CHECK(exists(at("out/again.tmp/new")) && is_dir(at("out/empty-final")) && !exists(at("out/empty-final/new")));

    CHECK(loom_rename_dir_atomic(at("out/none.tmp"), at("out/none")) == LOOM_E_IO);
    CHECK(error_names(at("out/none.tmp")));
    CHECK(!exists(at("out/none")));
}

static void test_path_join(void)
{
    char buf[64];
    CHECK(loom_path_join(buf, sizeof buf, "out", "checkpoint-1") == LOOM_OK && strcmp(buf, "out/checkpoint-1") == 0);
    CHECK(loom_path_join(buf, sizeof buf, "out/", "x") == LOOM_OK && strcmp(buf, "out/x") == 0);
    CHECK(loom_path_join(buf, sizeof buf, "", "x") == LOOM_OK && strcmp(buf, "x") == 0);
    CHECK(loom_path_join(buf, sizeof buf, "/", "x") == LOOM_OK && strcmp(buf, "/x") == 0);
    /* Joining onto the buffer's own contents. */
    CHECK(loom_path_join(buf, sizeof buf, "a", "b") == LOOM_OK);
    CHECK(loom_path_join(buf, sizeof buf, buf, "c") == LOOM_OK && strcmp(buf, "a/b/c") == 0);

    /* 15 characters + NUL fit 16 bytes exactly; one more does not. */
    char small[16];
    CHECK(loom_path_join(small, sizeof small, "abcdefg", "hijklmn") == LOOM_OK &&
          strcmp(small, "abcdefg/hijklmn") == 0);
    CHECK(loom_path_join(small, sizeof small, "abcdefg", "hijklmno") == LOOM_E_INVALID);
    CHECK(small[0] == '\0');
    CHECK(strstr(loom_error_message(), "hijklmno") != NULL);
    CHECK(loom_path_join(small, sizeof small, "abcdefg/", "hijklmno") == LOOM_E_INVALID);
    CHECK(loom_path_join(small, sizeof small, "abcdefg/", "hijklmn") == LOOM_OK &&
          strcmp(small, "abcdefg/hijklmn") == 0);

    /* A path of thousands of bytes is cut in the middle in the message, so the line still
     * ends with what went wrong rather than being cut off by the error buffer. */
    static char longer[5000];
    memset(longer, 'd', sizeof longer - 1);
    memcpy(longer + sizeof longer - 5, "tail", 4);
    CHECK(loom_path_join(buf, sizeof buf, longer, "model.safetensors") == LOOM_E_INVALID);
    const char *m = loom_error_message();
    CHECK(strlen(m) < 400 && strstr(m, "dddtail' joined with 'model.safetensors'") != NULL);
    CHECK(strstr(m, "...") != NULL && strstr(m, "the buffer holds 64") != NULL);
}

static void test_list_checkpoints(void)
{
    int64_t *steps = (int64_t *)1;
    size_t n = 99;
    CHECK(loom_list_checkpoints(at("no-output"), &steps, &n) == LOOM_OK && n == 0 && steps == NULL);

    const char *dirs[] = {"ck/checkpoint-9",     "ck/checkpoint-10", "ck/checkpoint-1",
                          "ck/checkpoint-100",   "ck/checkpoint-0",  "ck/checkpoint-abc",
                          "ck/checkpoint-5.tmp", "ck/checkpoint-",   "ck/checkpoint-007",
                          "ck/checkpoint--3",    "ck/checkpoint-+4", "ck/checkpoint-99999999999999999999",
                          "ck/Checkpoint-6",     "ck/runs",          "ck/real-target"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        CHECK(loom_mkdir_p(at(dirs[i])) == LOOM_OK);
    touch(at("ck/checkpoint-3"), "a file, not a checkpoint");
    CHECK(symlink(at("ck/real-target"), at("ck/checkpoint-42")) == 0);
    CHECK(symlink(at("ck/nowhere"), at("ck/checkpoint-43")) == 0);

    CHECK(loom_list_checkpoints(at("ck"), &steps, &n) == LOOM_OK);
    const int64_t want[] = {0, 1, 9, 10, 42, 100};
    CHECK(n == sizeof want / sizeof want[0]);
    for (size_t i = 0; i < n && i < sizeof want / sizeof want[0]; i++)
        CHECK(steps[i] == want[i]);
    free(steps);

    CHECK(loom_list_checkpoints(at("ck/checkpoint-3"), &steps, &n) == LOOM_E_IO);
    CHECK(error_names(at("ck/checkpoint-3")));
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/loom-fileutil-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base)) {
        fprintf(stderr, "cannot create a scratch folder under %s: %s\n", tmp ? tmp : "/tmp", strerror(errno));
        return 1;
    }
    test_mkdir_p();
    test_write_read();
    test_write_text();
    test_bounded_read();
    test_remove_tree();
    test_dir_is_empty();
    test_rename_dir();
    test_path_join();
    test_list_checkpoints();
    CHECK(loom_remove_tree(base) == LOOM_OK);
    CHECK(!exists(base));
    return test_finish("test_fileutil");
}
