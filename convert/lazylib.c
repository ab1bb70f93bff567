/* lazylib.c - libcurl and libxml2 loaded on first use (see lazylib.h). */
#include "lazylib.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static struct {
  CURLcode (*global_init)(long);
  CURL *(*easy_init)(void);
  void (*easy_cleanup)(CURL *);
  void (*easy_reset)(CURL *);
  CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
  CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
  CURLcode (*easy_perform)(CURL *);
  const char *(*easy_strerror)(CURLcode);
  struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
  void (*slist_free_all)(struct curl_slist *);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_cleanup)(CURLM *);
  CURLMcode (*multi_add_handle)(CURLM *, CURL *);
  CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
  CURLMcode (*multi_perform)(CURLM *, int *);
  CURLMcode (*multi_poll)(CURLM *, struct curl_waitfd *, unsigned, int, int *);
  CURLMcode (*multi_wakeup)(CURLM *);
  CURLMsg *(*multi_info_read)(CURLM *, int *);
  CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
} cu;

static struct {
  xmlDocPtr (*read_memory)(const char *, int, const char *, const char *, int);
  xmlNodePtr (*root)(const xmlDoc *);
  void (*free_doc)(xmlDocPtr);
  xmlChar *(*node_content)(const xmlNode *);
  xmlChar *(*get_prop)(const xmlNode *, const xmlChar *);
  void (*init_parser)(void);
  xmlFreeFunc *free; /* a variable in libxml2: the function it frees with */
} xm;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT, xml_once = PTHREAD_ONCE_INIT;

static void *lib_open(const char *name)
{
  void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "amiport: cannot load %s, which this command needs: %s\n", name, dlerror());
    exit(1);
  }
  return h;
}

/* Assigns the symbol to a function pointer of any type. */
static void lib_sym(void *h, const char *lib, const char *name, void *slot)
{
  void *p = dlsym(h, name);
  if (!p) {
    fprintf(stderr, "amiport: %s has no %s: %s\n", lib, name, dlerror());
    exit(1);
  }
  *(void **)slot = p;
}

static void curl_load(void)
{
  void *h = lib_open(LAZYLIB_CURL);
#define S(field, name) lib_sym(h, LAZYLIB_CURL, name, &cu.field)
  S(global_init, "curl_global_init");
  S(easy_init, "curl_easy_init");
  S(easy_cleanup, "curl_easy_cleanup");
  S(easy_reset, "curl_easy_reset");
  S(easy_setopt, "curl_easy_setopt");
  S(easy_getinfo, "curl_easy_getinfo");
  S(easy_perform, "curl_easy_perform");
  S(easy_strerror, "curl_easy_strerror");
  S(slist_append, "curl_slist_append");
  S(slist_free_all, "curl_slist_free_all");
  S(multi_init, "curl_multi_init");
  S(multi_cleanup, "curl_multi_cleanup");
  S(multi_add_handle, "curl_multi_add_handle");
  S(multi_remove_handle, "curl_multi_remove_handle");
  S(multi_perform, "curl_multi_perform");
  S(multi_poll, "curl_multi_poll");
  S(multi_wakeup, "curl_multi_wakeup");
  S(multi_info_read, "curl_multi_info_read");
  S(multi_setopt, "curl_multi_setopt");
#undef S
}

static void xml_load(void)
{
  void *h = lib_open(LAZYLIB_XML);
#define S(field, name) lib_sym(h, LAZYLIB_XML, name, &xm.field)
  S(read_memory, "xmlReadMemory");
  S(root, "xmlDocGetRootElement");
  S(free_doc, "xmlFreeDoc");
  S(node_content, "xmlNodeGetContent");
  S(get_prop, "xmlGetProp");
  S(init_parser, "xmlInitParser");
  S(free, "xmlFree");
#undef S
}

#define CURL_READY() pthread_once(&curl_once, curl_load)
#define XML_READY() pthread_once(&xml_once, xml_load)

CURLcode lazy_curl_global_init(long flags) { CURL_READY(); return cu.global_init(flags); }
CURL *lazy_curl_easy_init(void) { CURL_READY(); return cu.easy_init(); }
void lazy_curl_easy_cleanup(CURL *h) { CURL_READY(); cu.easy_cleanup(h); }
void lazy_curl_easy_reset(CURL *h) { CURL_READY(); cu.easy_reset(h); }
CURLcode lazy_curl_easy_perform(CURL *h) { CURL_READY(); return cu.easy_perform(h); }
const char *lazy_curl_easy_strerror(CURLcode cc) { CURL_READY(); return cu.easy_strerror(cc); }
struct curl_slist *lazy_curl_slist_append(struct curl_slist *l, const char *s)
{
  CURL_READY();
  return cu.slist_append(l, s);
}
void lazy_curl_slist_free_all(struct curl_slist *l) { CURL_READY(); cu.slist_free_all(l); }
CURLM *lazy_curl_multi_init(void) { CURL_READY(); return cu.multi_init(); }
CURLMcode lazy_curl_multi_cleanup(CURLM *m) { CURL_READY(); return cu.multi_cleanup(m); }
CURLMcode lazy_curl_multi_add_handle(CURLM *m, CURL *h) { CURL_READY(); return cu.multi_add_handle(m, h); }
CURLMcode lazy_curl_multi_remove_handle(CURLM *m, CURL *h)
{
  CURL_READY();
  return cu.multi_remove_handle(m, h);
}
CURLMcode lazy_curl_multi_perform(CURLM *m, int *running)
{
  CURL_READY();
  return cu.multi_perform(m, running);
}
CURLMcode lazy_curl_multi_poll(CURLM *m, struct curl_waitfd *fds, unsigned n, int ms, int *ret)
{
  CURL_READY();
  return cu.multi_poll(m, fds, n, ms, ret);
}
CURLMcode lazy_curl_multi_wakeup(CURLM *m) { CURL_READY(); return cu.multi_wakeup(m); }
CURLMsg *lazy_curl_multi_info_read(CURLM *m, int *left)
{
  CURL_READY();
  return cu.multi_info_read(m, left);
}

/* The variadic setters take one argument whose type the option's number
 * range says, as libcurl itself reads it: a long, a curl_off_t, or a
 * pointer (data, strings, lists, callbacks, blobs). */
#define SET_BY_TYPE(set, obj, opt, ap)                                               \
  ((opt) < CURLOPTTYPE_OBJECTPOINT ? set(obj, opt, va_arg(ap, long))                  \
   : (opt) >= CURLOPTTYPE_OFF_T && (opt) < CURLOPTTYPE_BLOB                            \
       ? set(obj, opt, va_arg(ap, curl_off_t))                                         \
       : set(obj, opt, va_arg(ap, void *)))

CURLcode lazy_curl_easy_setopt(CURL *h, CURLoption opt, ...)
{
  CURL_READY();
  va_list ap;
  va_start(ap, opt);
  CURLcode r = SET_BY_TYPE(cu.easy_setopt, h, opt, ap);
  va_end(ap);
  return r;
}

CURLMcode lazy_curl_multi_setopt(CURLM *m, CURLMoption opt, ...)
{
  CURL_READY();
  va_list ap;
  va_start(ap, opt);
  CURLMcode r = SET_BY_TYPE(cu.multi_setopt, m, opt, ap);
  va_end(ap);
  return r;
}

CURLcode lazy_curl_easy_getinfo(CURL *h, CURLINFO info, ...)
{
  CURL_READY();
  va_list ap;
  va_start(ap, info);
  CURLcode r = cu.easy_getinfo(h, info, va_arg(ap, void *)); /* always where to store it */
  va_end(ap);
  return r;
}

xmlDocPtr lazy_xmlReadMemory(const char *buf, int size, const char *url, const char *enc,
                             int options)
{
  XML_READY();
  return xm.read_memory(buf, size, url, enc, options);
}
xmlNodePtr lazy_xmlDocGetRootElement(const xmlDoc *doc) { XML_READY(); return xm.root(doc); }
void lazy_xmlFreeDoc(xmlDocPtr doc) { XML_READY(); xm.free_doc(doc); }
xmlChar *lazy_xmlNodeGetContent(const xmlNode *n) { XML_READY(); return xm.node_content(n); }
xmlChar *lazy_xmlGetProp(const xmlNode *n, const xmlChar *name)
{
  XML_READY();
  return xm.get_prop(n, name);
}
void lazy_xmlInitParser(void) { XML_READY(); xm.init_parser(); }
void lazy_xmlFree(void *p) { XML_READY(); (*xm.free)(p); }
