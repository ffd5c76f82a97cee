/*
 * test_man.c: every page in man/ renders without a warning, its .Dt (or,
 * in a man(7) page, its .TH) names its file, and each tool's page
 * documents every option its -h lists.  The overview, tollgate(7), names
 * only what exists: every `struct seg_*' is declared in libclient/seg.h,
 * every setting it writes \fBNAME\ =\fR is one the config parser knows
 * and tollgate.conf(5) documents; and the other pages point to it.
 *
 * Run from the repository root (as `make test' does): the pages are read
 * from man/, the tools from $TG_BUILD.  man(1) and groff(1) come from the
 * Debian packages man-db and groff-base; without them this test fails, it
 * does not skip: a page that was never rendered was never checked.
 */
#include <sys/stat.h>
#include <sys/wait.h>
#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <setjmp.h>	/* cmocka 1.1 needs setjmp, stdarg, stddef, stdint */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "helpers.h"

#define MAN_DIR		"man"
#define PAGES_MIN	6		/* 3 tools, the library, conf, broker */
#define PAGES_MAX	64
#define OUT_MAX		65536
#define OPTS_MAX	64
#define OPT_LEN		32
#define DOC_MAX		(256 * 1024)	/* bytes of a page or a header */
#define NAMES_MAX	128
#define NAME_LEN	64
#define OVERVIEW	MAN_DIR "/tollgate.7"
#define LAYOUT_H	"libclient/seg.h"
#define CONF_PAGE	MAN_DIR "/tollgate.conf.5"
/* What the overview names at least: the parsers below found them. */
#define STRUCTS_MIN	8		/* header, cfg, key, limit, state... */
#define SETTINGS_MIN	11		/* every one the parser has today */

/* The tools whose -h is checked against their page, man/NAME.1. */
static const char *const tools[] = { "tollstat", "tollsim", "tollrun",
    "tollctl" };

/* The pages man/ holds, NAME.[1-8], sorted; at most PAGES_MAX. */
static char pages[PAGES_MAX][NAME_MAX + 1];
static size_t npages;

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Whether name is a page: something.N, N from 1 to 8. */
static int
is_page(const char *name)
{
	size_t n = strlen(name);

	return n > 2 && name[n - 2] == '.' && name[n - 1] >= '1' &&
	    name[n - 1] <= '8';
}

/* Fill pages[] from man/, at run time; fails below PAGES_MIN. */
static void
list_pages(void)
{
	char path[PATH_MAX];
	struct dirent *d;
	struct stat st;
	DIR *dir;

	npages = 0;
	if ((dir = opendir(MAN_DIR)) == NULL)
		fail_msg("cannot open %s/: run from the repository root",
		    MAN_DIR);
	while ((d = readdir(dir)) != NULL) {
		if (!is_page(d->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", MAN_DIR, d->d_name);
		if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (npages == PAGES_MAX)
			fail_msg("more than %d pages in %s/", PAGES_MAX,
			    MAN_DIR);
		snprintf(pages[npages++], sizeof(pages[0]), "%s", d->d_name);
	}
	closedir(dir);
	qsort(pages, npages, sizeof(pages[0]), name_cmp);
	if (npages < PAGES_MIN)
		fail_msg("%zu pages in %s/, want at least %d", npages, MAN_DIR,
		    PAGES_MIN);
}

/* Whether an executable name is on $PATH. */
static int
on_path(const char *name)
{
	const char *p = getenv("PATH"), *end;
	char path[PATH_MAX];
	size_t n;

	if (p == NULL || *p == '\0')
		p = "/usr/local/bin:/usr/bin:/bin";
	for (;; p = end + 1) {
		end = strchrnul(p, ':');
		n = (size_t)(end - p);
		/* An empty entry is the current directory. */
		snprintf(path, sizeof(path), "%.*s/%s", (int)(n ? n : 1),
		    n ? p : ".", name);
		if (access(path, X_OK) == 0)
			return 1;
		if (*end == '\0')
			return 0;
	}
}

/* Fail, never skip, without a program the checks need. */
static void
need(const char *prog, const char *pkg)
{
	if (!on_path(prog))
		fail_msg("%s(1) is not on PATH (Debian package %s), so the "
		    "man pages cannot be checked: as root, apt-get install "
		    "man-db groff-base", prog, pkg);
}

/*
 * Whether a page is written in man(7) macros (.TH), not mdoc(7) (.Dt):
 * the overview is, like other projects' overview pages.
 */
static int
is_man7(const char *path)
{
	char line[1024];
	FILE *f;
	int yes = 0;

	if ((f = fopen(path, "r")) == NULL)
		fail_msg("cannot open %s", path);
	while (!yes && fgets(line, sizeof(line), f) != NULL)
		yes = strncmp(line, ".TH ", 4) == 0;
	fclose(f);
	return yes;
}

/* The page's path, checked to be safe inside single quotes. */
static void
page_path(const char *name, char *buf, size_t len)
{
	if (strchr(name, '\'') != NULL)
		fail_msg("page name with a quote: %s", name);
	snprintf(buf, len, "%s/%s", MAN_DIR, name);
}

static void
test_tools_installed(void **state)
{
	(void)state;
	need("man", "man-db");
	need("groff", "groff-base");
}

/*
 * Each page, through man(1) as a user reads it and through groff's mdoc
 * directly, all warnings on: stderr must stay empty, the status 0.  The
 * width is fixed, so a terminal's cannot change the verdict.
 */
static void
test_pages_render(void **state)
{
	static char out[OUT_MAX];
	char path[PATH_MAX], cmd[PATH_MAX + 128];
	int bad = 0, r;

	(void)state;
	need("man", "man-db");
	need("groff", "groff-base");
	list_pages();
	for (size_t i = 0; i < npages; i++) {
		page_path(pages[i], path, sizeof(path));
		snprintf(cmd, sizeof(cmd), "MANWIDTH=80 man -l --warnings=all "
		    "-Tutf8 '%s' 2>&1 >/dev/null", path);
		r = tb_run(cmd, out, sizeof(out));
		if (r != 0 || out[0] != '\0') {
			print_message("%s: man exit %d:\n%s\n", path, r, out);
			bad++;
		}
		snprintf(cmd, sizeof(cmd), "groff %s -ww -z '%s' 2>&1",
		    is_man7(path) ? "-man -Tutf8" : "-mdoc", path);
		r = tb_run(cmd, out, sizeof(out));
		if (r != 0 || out[0] != '\0') {
			print_message("%s: groff exit %d:\n%s\n", path, r, out);
			bad++;
		}
	}
	if (bad > 0)
		fail_msg("%d of %zu pages render with warnings or errors", bad,
		    npages);
}

/*
 * Each page's .Dt (mdoc) or .TH (man): its file name without the
 * section, upper case, then the section.
 */
static void
test_dt_matches_file(void **state)
{
	char path[PATH_MAX], line[1024], want[NAME_MAX + 1];
	char title[sizeof(line)], sect[sizeof(line)], extra[sizeof(line)];
	const char *mac;
	int bad = 0, found, n;
	FILE *f;

	(void)state;
	list_pages();
	for (size_t i = 0; i < npages; i++) {
		size_t len = strlen(pages[i]) - 2;

		for (size_t j = 0; j < len; j++)
			want[j] = (char)toupper((unsigned char)pages[i][j]);
		want[len] = '\0';
		page_path(pages[i], path, sizeof(path));
		mac = is_man7(path) ? ".TH" : ".Dt";
		assert_non_null(f = fopen(path, "r"));
		found = 0;
		while (fgets(line, sizeof(line), f) != NULL) {
			if (strncmp(line, mac, 3) != 0 ||
			    (line[3] != ' ' && line[3] != '\t'))
				continue;
			found++;
			n = sscanf(line + 3, "%1023s %1023s %1023s", title,
			    sect, extra);
			if (n < 2 || strcmp(title, want) != 0 ||
			    strcmp(sect, pages[i] + len + 1) != 0) {
				print_message("%s: %s    want %s %s %s\n",
				    path, line, mac, want, pages[i] + len + 1);
				bad++;
			}
		}
		fclose(f);
		if (found != 1) {
			print_message("%s: %d %s lines, want 1\n", path,
			    found, mac);
			bad++;
		}
	}
	if (bad > 0)
		fail_msg("%d .Dt/.TH problems", bad);
}

/* Add option opt ("c" or "-server") to opts[], once. */
static void
add_opt(char opts[][OPT_LEN], size_t *n, const char *opt, size_t len)
{
	if (len == 0 || len >= OPT_LEN)
		return;
	for (size_t i = 0; i < *n; i++)
		if (strlen(opts[i]) == len && memcmp(opts[i], opt, len) == 0)
			return;
	if (*n == OPTS_MAX)
		fail_msg("more than %d options", OPTS_MAX);
	memcpy(opts[*n], opt, len);
	opts[(*n)++][len] = '\0';
}

/*
 * The options in one token of a usage: "[-chjp]" gives c h j p,
 * "--every" gives "-every" (the page writes .Fl \-every), "--" nothing.
 */
static void
token_opts(const char *tok, size_t len, char opts[][OPT_LEN], size_t *n)
{
	while (len > 0 && (*tok == '[' || *tok == '(')) {
		tok++;
		len--;
	}
	while (len > 0 && strchr("]),|", tok[len - 1]) != NULL)
		len--;
	if (len < 2 || tok[0] != '-')
		return;
	if (tok[1] == '-') {
		size_t e = 2;

		while (e < len && (isalnum((unsigned char)tok[e]) ||
		    tok[e] == '-'))
			e++;
		if (e > 2)
			add_opt(opts, n, tok + 1, e - 1);
		return;
	}
	for (size_t i = 1; i < len && isalnum((unsigned char)tok[i]); i++)
		add_opt(opts, n, tok + i, 1);
}

/* Every token of s[0 .. len) that names options. */
static void
text_opts(const char *s, size_t len, char opts[][OPT_LEN], size_t *n)
{
	size_t i = 0, t;

	while (i < len) {
		while (i < len && (s[i] == ' ' || s[i] == '\t'))
			i++;
		for (t = i; i < len && s[i] != ' ' && s[i] != '\t'; i++)
			;
		if (i > t)
			token_opts(s + t, i - t, opts, n);
	}
}

/*
 * The options a -h output lists: every option in the synopsis (the
 * "usage:" line and the deeper-indented lines that continue it), and the
 * leading part, up to a double space, of each option line (an indented
 * line starting with '-').  Description text is not read, so "curl -D
 * FILE" in it is no option of ours.
 */
static size_t
help_opts(const char *help, char opts[][OPT_LEN])
{
	const char *l, *end, *s, *gap;
	size_t n = 0, indent;
	int synopsis = 0;

	for (l = help; *l != '\0'; l = *end != '\0' ? end + 1 : end) {
		end = strchrnul(l, '\n');
		for (s = l; s < end && *s == ' '; s++)
			;
		indent = (size_t)(s - l);
		if (strncmp(l, "usage:", 6) == 0) {
			synopsis = 1;
			text_opts(l + 6, (size_t)(end - l - 6), opts, &n);
			continue;
		}
		if (synopsis && indent >= 8 && s < end &&
		    strchr("[(-", *s) != NULL) {
			text_opts(s, (size_t)(end - s), opts, &n);
			continue;
		}
		synopsis = 0;
		if (indent == 0 || indent >= 8 || s == end || *s != '-')
			continue;
		gap = memmem(s, (size_t)(end - s), "  ", 2);
		text_opts(s, (size_t)((gap != NULL ? gap : end) - s), opts,
		    &n);
	}
	return n;
}

/* Whether the page has a macro line with "Fl opt" on it. */
static int
page_has_fl(const char *page, const char *opt)
{
	const char *l, *end, *p;
	char want[OPT_LEN + 2];
	size_t len;

	/* A long option is written .Fl \-name. */
	snprintf(want, sizeof(want), "%s%s", opt[0] == '-' ? "\\" : "", opt);
	len = strlen(want);
	for (l = page; *l != '\0'; l = *end != '\0' ? end + 1 : end) {
		end = strchrnul(l, '\n');
		if (*l != '.')
			continue;
		for (p = l; p + 3 + len <= end; p++) {
			if ((p != l && p[-1] != ' ' && p[-1] != '\t' &&
			    p[-1] != '.') || strncmp(p, "Fl ", 3) != 0)
				continue;
			if (strncmp(p + 3, want, len) == 0 &&
			    (p + 3 + len == end || p[3 + len] == ' ' ||
			    p[3 + len] == '\t'))
				return 1;
		}
	}
	return 0;
}

static void
test_options_documented(void **state)
{
	static char help[OUT_MAX], page[OUT_MAX * 2];
	char bin[PATH_MAX], cmd[PATH_MAX + 32], path[PATH_MAX];
	char opts[OPTS_MAX][OPT_LEN];
	size_t n;
	int bad = 0, r;
	FILE *f;

	(void)state;
	for (size_t t = 0; t < sizeof(tools) / sizeof(tools[0]); t++) {
		tb_bin(tools[t], bin, sizeof(bin));
		if (access(bin, X_OK) < 0)
			fail_msg("%s: not built (make %s)", bin, bin);
		snprintf(cmd, sizeof(cmd), "'%s' -h 2>&1", bin);
		r = tb_run(cmd, help, sizeof(help));
		if (r != 0)
			fail_msg("%s -h: exit %d:\n%s", bin, r, help);
		n = help_opts(help, opts);
		/* -h itself and two more at least: the parser found them. */
		if (n < 3)
			fail_msg("%s -h: %zu options found in:\n%s", bin, n,
			    help);
		snprintf(path, sizeof(path), "%s/%s.1", MAN_DIR, tools[t]);
		if ((f = fopen(path, "r")) == NULL)
			fail_msg("%s: no page for %s", path, tools[t]);
		tb_slurp(f, page, sizeof(page));
		fclose(f);
		for (size_t i = 0; i < n; i++)
			if (!page_has_fl(page, opts[i])) {
				print_message("%s: -h lists -%s, but the page "
				    "has no .Fl %s%s\n", path, opts[i],
				    opts[i][0] == '-' ? "\\" : "", opts[i]);
				bad++;
			}
	}
	if (bad > 0)
		fail_msg("%d options undocumented", bad);
}

/* The option parser itself, on a help text shaped like tollrun's. */
static void
test_help_parser(void **state)
{
	static const char help[] =
	    "usage: prog [-ab] [-s SEG] -k KEY [--long N]\n"
	    "               [--other] -- COMMAND [ARG ...]\n"
	    "Some text; -x here is prose.\n"
	    "  -s, --segment SEGMENT  the segment (curl -D FILE)\n"
	    "      --deep N           text\n"
	    "                         -y continued description\n"
	    "  -c FILE -k KEY  both\n";
	static const char *const want[] = {
		"a", "b", "s", "k", "-long", "-other", "-segment", "-deep",
		"c",
	};
	char opts[OPTS_MAX][OPT_LEN];
	size_t n;

	(void)state;
	n = help_opts(help, opts);
	assert_int_equal(n, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < n; i++)
		assert_string_equal(opts[i], want[i]);
	assert_true(page_has_fl(".It Fl s Ar seg\n", "s"));
	assert_true(page_has_fl(".Op Fl a | Fl b\n", "b"));
	assert_true(page_has_fl(".It Fl \\-long Ar n\n", "-long"));
	assert_false(page_has_fl(".It Fl \\-longer\n", "-long"));
	assert_false(page_has_fl(".It Fl sx\n", "s"));
	assert_false(page_has_fl("Fl s in text\n", "s"));
	assert_false(page_has_fl(".It Fl s\n", "-s"));
}

/* Read the file at path into buf; fails if it is missing or too large. */
static void
read_doc(const char *path, char *buf, size_t len)
{
	FILE *f;
	size_t n;

	if ((f = fopen(path, "r")) == NULL)
		fail_msg("cannot open %s: run from the repository root", path);
	n = tb_slurp(f, buf, len);
	fclose(f);
	if (n + 1 >= len)
		fail_msg("%s: larger than %zu bytes", path, len - 1);
}

/*
 * A page without its comment lines (.\" or '\" at the start of a line),
 * into out: the source's own notes on the conventions name no name.
 */
static void
strip_comments(const char *page, char *out, size_t len)
{
	const char *l, *end;
	size_t n = 0, k;

	for (l = page; *l != '\0'; l = *end != '\0' ? end + 1 : end) {
		end = strchrnul(l, '\n');
		if ((l[0] == '.' || l[0] == '\'') && l[1] == '\\' &&
		    l[2] == '"')
			continue;
		k = (size_t)(end - l);
		if (n + k + 2 > len)
			fail_msg("page too large to strip");
		memcpy(out + n, l, k);
		n += k;
		out[n++] = '\n';
	}
	out[n] = '\0';
}

static int
name_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* Add name [s, s + len) to names[] once. */
static void
add_name(char names[][NAME_LEN], size_t *n, const char *s, size_t len)
{
	if (len == 0 || len >= NAME_LEN)
		fail_msg("name of %zu bytes: %.*s", len, (int)len, s);
	for (size_t i = 0; i < *n; i++)
		if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
			return;
	if (*n == NAMES_MAX)
		fail_msg("more than %d names", NAMES_MAX);
	memcpy(names[*n], s, len);
	names[(*n)++][len] = '\0';
}

/*
 * The layout structures a page names: "seg_key" for every "struct
 * seg_key" in its text ("struct seg_*", the family, names none).
 */
static size_t
page_structs(const char *text, char names[][NAME_LEN])
{
	static const char pre[] = "struct seg_";
	const char *p, *e;
	size_t n = 0;

	for (p = text; (p = strstr(p, pre)) != NULL; p = e) {
		p += strlen("struct ");
		for (e = p + strlen("seg_"); name_char(*e); e++)
			;
		if (e > p + strlen("seg_"))
			add_name(names, &n, p, (size_t)(e - p));
	}
	return n;
}

/*
 * The config settings a page names, by its convention: \fBNAME\ =
 * (bold, a non-breaking space, the equals sign), NAME lower case.
 */
static size_t
page_settings(const char *text, char names[][NAME_LEN])
{
	const char *p, *e;
	size_t n = 0;

	for (p = text; (p = strstr(p, "\\fB")) != NULL; p = e) {
		p += 3;
		for (e = p; name_char(*e); e++)
			;
		if (e > p && strncmp(e, "\\ =", 3) == 0)
			add_name(names, &n, p, (size_t)(e - p));
	}
	return n;
}

/* Whether text has a line that starts with want. */
static int
has_line(const char *text, const char *want)
{
	size_t len = strlen(want);

	for (const char *p = text; p != NULL; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (strncmp(p, want, len) == 0)
			return 1;
	}
	return 0;
}

/* Whether the header hdr declares `struct name {' at the start of a line. */
static int
declared(const char *hdr, const char *name)
{
	char want[NAME_LEN + 16];

	snprintf(want, sizeof(want), "struct %s {", name);
	return has_line(hdr, want);
}

/* A config error that says the parser does not know a setting. */
static void
probe_report(void *arg, const char *msg)
{
	if (strstr(msg, "unknown setting") != NULL)
		*(int *)arg = 1;
}

/*
 * Whether broker/config.c's parser knows setting name, in [broker] or in
 * a key: asked, with a value, it says anything but "unknown setting".
 */
static int
parser_knows(const char *name)
{
	static const char *const sections[] = {
		"[broker]\n",
		"[tgman]\nlimit = 1 requests/s\n",
	};
	struct config cfg;
	char buf[256];
	int unknown, known = 0;

	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
		snprintf(buf, sizeof(buf), "%s%s = x\n", sections[i], name);
		unknown = 0;
		if (config_load_mem("probe", buf, strlen(buf), &cfg,
		    probe_report, &unknown) == 0)
			config_free(&cfg);
		if (!unknown)
			known = 1;
	}
	return known;
}

/* Whether tollgate.conf(5) documents setting name: .It Cm NAME = */
static int
conf_documents(const char *conf, const char *name)
{
	char want[NAME_LEN + 16];

	snprintf(want, sizeof(want), ".It Cm %s =", name);
	return has_line(conf, want);
}

/* The structures text names that hdr does not declare; *n: how many. */
static int
check_structs(const char *what, const char *text, const char *hdr,
    size_t *n)
{
	char names[NAMES_MAX][NAME_LEN];
	int bad = 0;

	*n = page_structs(text, names);
	for (size_t i = 0; i < *n; i++)
		if (!declared(hdr, names[i])) {
			print_message("%s names struct %s, which %s does not "
			    "declare\n", what, names[i], LAYOUT_H);
			bad++;
		}
	return bad;
}

/* The settings text names that the parser or the conf page lacks. */
static int
check_settings(const char *what, const char *text, const char *conf,
    size_t *n)
{
	char names[NAMES_MAX][NAME_LEN];
	int bad = 0;

	*n = page_settings(text, names);
	for (size_t i = 0; i < *n; i++) {
		if (!parser_knows(names[i])) {
			print_message("%s names setting `%s =', which the "
			    "config parser does not know\n", what, names[i]);
			bad++;
		}
		if (!conf_documents(conf, names[i])) {
			print_message("%s names setting `%s =', which %s does "
			    "not document (.It Cm %s =)\n", what, names[i],
			    CONF_PAGE, names[i]);
			bad++;
		}
	}
	return bad;
}

/* The checks below can fail: wrong names, on text made to have them. */
static void
test_design_checks_fail(void **state)
{
	static char hdr[DOC_MAX], conf[DOC_MAX], text[4096];
	char names[NAMES_MAX][NAME_LEN];
	size_t n;

	(void)state;
	read_doc(LAYOUT_H, hdr, sizeof(hdr));
	read_doc(CONF_PAGE, conf, sizeof(conf));
	/* The extractors, comments stripped first. */
	strip_comments(".\\\" struct seg_comment \\fBcomment\\ =\\fR\n"
	    "\\fBstruct seg_key\\fR and \\fBlearn\\ =\\ yes\\fR,\n"
	    ".B struct seg_*\n\\fBlimit\\fR = no, \\fBstruct seg_cfg\\fR\n",
	    text, sizeof(text));
	assert_int_equal(page_structs(text, names), 2);
	assert_string_equal(names[0], "seg_key");
	assert_string_equal(names[1], "seg_cfg");
	assert_int_equal(page_settings(text, names), 1);
	assert_string_equal(names[0], "learn");
	/* The lookups, each way. */
	assert_true(declared(hdr, "seg_lstate"));
	assert_false(declared(hdr, "seg_lstat"));
	assert_false(declared(hdr, "seg_map_x"));
	assert_true(parser_knows("max_pause"));
	assert_true(parser_knows("max_clients"));
	assert_false(parser_knows("max_pauses"));
	assert_true(conf_documents(conf, "max_pause"));
	assert_false(conf_documents(conf, "max_pauses"));
	/* A page with one wrong name of each kind fails on exactly it. */
	snprintf(text, sizeof(text), "\\fBstruct seg_limit\\fR, "
	    "\\fBstruct seg_limits\\fR, \\fBbackoff\\ =\\fR, "
	    "\\fBbackof\\ =\\fR\n");
	assert_int_equal(check_structs("made-up page", text, hdr, &n), 1);
	assert_int_equal(n, 2);
	/* Unknown to the parser and undocumented: two findings. */
	assert_int_equal(check_settings("made-up page", text, conf, &n), 2);
	assert_int_equal(n, 2);
}

/*
 * The overview names only what exists: the layout's structures and the
 * config's settings, the two things it describes most and that change.
 */
static void
test_design_names(void **state)
{
	static char page[DOC_MAX], text[DOC_MAX], hdr[DOC_MAX], conf[DOC_MAX];
	size_t nstructs, nsettings;
	int bad;

	(void)state;
	read_doc(OVERVIEW, page, sizeof(page));
	read_doc(LAYOUT_H, hdr, sizeof(hdr));
	read_doc(CONF_PAGE, conf, sizeof(conf));
	strip_comments(page, text, sizeof(text));
	bad = check_structs(OVERVIEW, text, hdr, &nstructs);
	bad += check_settings(OVERVIEW, text, conf, &nsettings);
	if (bad > 0)
		fail_msg("%d names in %s that do not exist", bad, OVERVIEW);
	/* Fewer found than it names: the page broke the convention. */
	if (nstructs < STRUCTS_MIN || nsettings < SETTINGS_MIN)
		fail_msg("%s: %zu structures (want %d or more) and %zu "
		    "settings (want %d or more) found", OVERVIEW, nstructs,
		    STRUCTS_MIN, nsettings, SETTINGS_MIN);
}

/* Every other page points to the overview in its SEE ALSO. */
static void
test_see_also_overview(void **state)
{
	static const char *const others[] = {
		"tollgate.3", "tollgate.conf.5", "tollgated.8", "tollstat.1",
		"tollrun.1", "tollsim.1", "tollctl.1",
	};
	static char page[DOC_MAX];
	char path[PATH_MAX];
	const char *see;
	int bad = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		page_path(others[i], path, sizeof(path));
		read_doc(path, page, sizeof(page));
		if ((see = strstr(page, "\n.Sh SEE ALSO\n")) == NULL ||
		    !has_line(see + 1, ".Xr tollgate 7")) {
			print_message("%s: no .Xr tollgate 7 after .Sh SEE "
			    "ALSO\n", path);
			bad++;
		}
	}
	if (bad > 0)
		fail_msg("%d pages do not point to tollgate(7)", bad);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tools_installed),
		cmocka_unit_test(test_pages_render),
		cmocka_unit_test(test_dt_matches_file),
		cmocka_unit_test(test_help_parser),
		cmocka_unit_test(test_options_documented),
		cmocka_unit_test(test_design_checks_fail),
		cmocka_unit_test(test_design_names),
		cmocka_unit_test(test_see_also_overview),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
