/* log.h: private; the broker's logging, to stderr (the supervisor keeps it). */
#ifndef TG_LOG_H
#define TG_LOG_H

#include <stdarg.h>

extern int	log_verbose;	/* log_debug prints when set (-d) */

void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	fatal(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

#endif /* TG_LOG_H */
