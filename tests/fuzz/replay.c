/*
 * replay.c: runs a libFuzzer target over files without libFuzzer, so that
 * make test replays every corpus and saved crash case through a gcc build
 * (and under ASan+UBSan in make asan).  Usage: replay FILE...
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
main(int argc, char *argv[])
{
	unsigned char *buf;
	long len;
	FILE *f;
	int n = 0;

	for (int i = 1; i < argc; i++) {
		if ((f = fopen(argv[i], "rb")) == NULL ||
		    fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
		    fseek(f, 0, SEEK_SET) != 0) {
			perror(argv[i]);
			return 1;
		}
		/* An exact-size heap copy: ASan sees any read past the end. */
		if ((buf = malloc(len ? (size_t)len : 1)) == NULL ||
		    fread(buf, 1, (size_t)len, f) != (size_t)len) {
			perror(argv[i]);
			return 1;
		}
		fclose(f);
		LLVMFuzzerTestOneInput(buf, (size_t)len);
		free(buf);
		n++;
	}
	printf("replayed %d input%s\n", n, n == 1 ? "" : "s");
	return 0;
}
