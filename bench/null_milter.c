/* A milter in C (Sendmail's libmilter, Debian's libmilter-dev) that negotiates as mailwarden's milter
 * does and decides nothing: the same stages without reply (SMFIP_NR_*), the same macros asked for,
 * the same two header fields added at the end of the message. bench/milter_throughput.py builds it
 * with `cc` and runs it beside Postfix to measure what the milter protocol costs Postfix itself when
 * the milter costs next to nothing: the ceiling of the with/without ratio for any milter.
 *
 *     cc -O2 -o null_milter bench/null_milter.c -lmilter -pthread && ./null_milter inet:PORT@127.0.0.1
 */
#include <libmilter/mfapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned long NO_REPLY = SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_DATA |
                                      SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_NR_UNKN;

static sfsistat negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
                          unsigned long f3, unsigned long *pf0, unsigned long *pf1, unsigned long *pf2,
                          unsigned long *pf3) {
    (void)f2;
    (void)f3;
    *pf0 = f0 & (SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_SETSYMLIST);
    *pf1 = f1 & (NO_REPLY | SMFIP_HDR_LEADSPC | SMFIP_NOUNKNOWN);
    *pf2 = 0;
    *pf3 = 0;
    smfi_setsymlist(ctx, SMFIM_CONNECT, "{client_addr} {client_name} {daemon_name}");
    smfi_setsymlist(ctx, SMFIM_ENVFROM, "{mail_addr} {auth_authen}");
    smfi_setsymlist(ctx, SMFIM_ENVRCPT, "{rcpt_addr}");
    smfi_setsymlist(ctx, SMFIM_EOM, "i");
    return SMFIS_CONTINUE;
}

static sfsistat no_reply_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr) {
    (void)ctx;
    (void)host;
    (void)addr;
    return SMFIS_NOREPLY;
}

static sfsistat no_reply_args(SMFICTX *ctx, char **argv) {
    (void)ctx;
    (void)argv;
    return SMFIS_NOREPLY;
}

static sfsistat no_reply_text(SMFICTX *ctx, char *text) {
    (void)ctx;
    (void)text;
    return SMFIS_NOREPLY;
}

static sfsistat recipient(SMFICTX *ctx, char **argv) {
    (void)ctx;
    (void)argv;
    return SMFIS_CONTINUE;
}

static sfsistat no_reply_header(SMFICTX *ctx, char *name, char *value) {
    (void)ctx;
    (void)name;
    (void)value;
    return SMFIS_NOREPLY;
}

static sfsistat no_reply_ctx(SMFICTX *ctx) {
    (void)ctx;
    return SMFIS_NOREPLY;
}

static sfsistat no_reply_body(SMFICTX *ctx, unsigned char *chunk, size_t size) {
    (void)ctx;
    (void)chunk;
    (void)size;
    return SMFIS_NOREPLY;
}

static sfsistat end_of_message(SMFICTX *ctx) {
    smfi_insheader(ctx, 0, "Authentication-Results", " mx; none");
    smfi_insheader(ctx, 1, "X-Mailwarden-Ref", " 1C3Z00000000");
    return SMFIS_CONTINUE;
}

static sfsistat nothing(SMFICTX *ctx) {
    (void)ctx;
    return SMFIS_CONTINUE;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s inet:PORT@127.0.0.1\n", argv[0]);
        return 2;
    }
    struct smfiDesc filter;
    memset(&filter, 0, sizeof filter);
    filter.xxfi_name = "null";
    filter.xxfi_version = SMFI_VERSION;
    filter.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_SETSYMLIST;
    filter.xxfi_connect = no_reply_connect;
    filter.xxfi_helo = no_reply_text;
    filter.xxfi_envfrom = no_reply_args;
    filter.xxfi_envrcpt = recipient;
    filter.xxfi_header = no_reply_header;
    filter.xxfi_eoh = no_reply_ctx;
    filter.xxfi_body = no_reply_body;
    filter.xxfi_eom = end_of_message;
    filter.xxfi_abort = nothing;
    filter.xxfi_close = nothing;
    filter.xxfi_data = no_reply_ctx;
    filter.xxfi_negotiate = negotiate;
    if (smfi_setconn(argv[1]) == MI_FAILURE || smfi_setbacklog(1024) == MI_FAILURE ||
        smfi_register(filter) == MI_FAILURE) {
        fprintf(stderr, "null_milter: cannot set up %s\n", argv[1]);
        return 1;
    }
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}
