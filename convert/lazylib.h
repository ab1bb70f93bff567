/* lazylib.h - libcurl and libxml2, loaded the first time one of their
 * functions is called rather than when amiport starts (lazylib.c). With
 * what they pull in (Kerberos, LDAP, ICU, ...) they cost every command
 * about 25 ms of start-up, and only the AWS and bundle paths use them.
 * Include this instead of <curl/curl.h> and libxml2's headers: the names
 * below then call through lazylib.c. A library that cannot be loaded ends
 * the process with a message naming it. */
#ifndef AMIPORT_LAZYLIB_H
#define AMIPORT_LAZYLIB_H

#include <curl/curl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#define LAZYLIB_CURL "libcurl.so.4"
#define LAZYLIB_XML "libxml2.so.2"

/* curl.h wraps the variadic setters in type-checking macros */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt

CURLcode lazy_curl_global_init(long flags);
CURL *lazy_curl_easy_init(void);
void lazy_curl_easy_cleanup(CURL *h);
void lazy_curl_easy_reset(CURL *h);
CURLcode lazy_curl_easy_setopt(CURL *h, CURLoption opt, ...);
CURLcode lazy_curl_easy_getinfo(CURL *h, CURLINFO info, ...);
CURLcode lazy_curl_easy_perform(CURL *h);
const char *lazy_curl_easy_strerror(CURLcode cc);
struct curl_slist *lazy_curl_slist_append(struct curl_slist *l, const char *s);
void lazy_curl_slist_free_all(struct curl_slist *l);
CURLM *lazy_curl_multi_init(void);
CURLMcode lazy_curl_multi_cleanup(CURLM *m);
CURLMcode lazy_curl_multi_add_handle(CURLM *m, CURL *h);
CURLMcode lazy_curl_multi_remove_handle(CURLM *m, CURL *h);
CURLMcode lazy_curl_multi_perform(CURLM *m, int *running);
CURLMcode lazy_curl_multi_poll(CURLM *m, struct curl_waitfd *fds, unsigned n, int ms, int *ret);
CURLMcode lazy_curl_multi_wakeup(CURLM *m);
CURLMsg *lazy_curl_multi_info_read(CURLM *m, int *left);
CURLMcode lazy_curl_multi_setopt(CURLM *m, CURLMoption opt, ...);

xmlDocPtr lazy_xmlReadMemory(const char *buf, int size, const char *url, const char *enc,
                             int options);
xmlNodePtr lazy_xmlDocGetRootElement(const xmlDoc *doc);
void lazy_xmlFreeDoc(xmlDocPtr doc);
xmlChar *lazy_xmlNodeGetContent(const xmlNode *n);
xmlChar *lazy_xmlGetProp(const xmlNode *n, const xmlChar *name);
void lazy_xmlInitParser(void);
void lazy_xmlFree(void *p);

#define curl_global_init lazy_curl_global_init
#define curl_easy_init lazy_curl_easy_init
#define curl_easy_cleanup lazy_curl_easy_cleanup
#define curl_easy_reset lazy_curl_easy_reset
#define curl_easy_setopt lazy_curl_easy_setopt
#define curl_easy_getinfo lazy_curl_easy_getinfo
#define curl_easy_perform lazy_curl_easy_perform
#define curl_easy_strerror lazy_curl_easy_strerror
#define curl_slist_append lazy_curl_slist_append
#define curl_slist_free_all lazy_curl_slist_free_all
#define curl_multi_init lazy_curl_multi_init
#define curl_multi_cleanup lazy_curl_multi_cleanup
#define curl_multi_add_handle lazy_curl_multi_add_handle
#define curl_multi_remove_handle lazy_curl_multi_remove_handle
#define curl_multi_perform lazy_curl_multi_perform
#define curl_multi_poll lazy_curl_multi_poll
#define curl_multi_wakeup lazy_curl_multi_wakeup
#define curl_multi_info_read lazy_curl_multi_info_read
#define curl_multi_setopt lazy_curl_multi_setopt
#define xmlReadMemory lazy_xmlReadMemory
#define xmlDocGetRootElement lazy_xmlDocGetRootElement
#define xmlFreeDoc lazy_xmlFreeDoc
#define xmlNodeGetContent lazy_xmlNodeGetContent
#define xmlGetProp lazy_xmlGetProp
#define xmlInitParser lazy_xmlInitParser
#undef xmlFree
#define xmlFree lazy_xmlFree

#endif
