/*
 * Roam's native image codec (Node-API): LZ4 through the reference library (liblz4), and a restore's
 * pages written straight into the sandbox's memory by every core at once.
 *
 * Why native: a restore must come within a small factor of a plain copy of the guest's memory.
 * The portable path decodes LZ4 one chunk at a time on the caller's thread into a fresh buffer and
 * copies it into the sandbox; here threads decode into the sandbox's pages themselves, and LZ4HC's
 * blocks (fewer, longer matches) decode faster than lz4_flex's (BENCHMARKS.md, session 20). src/guest/image/native.ts loads this module and
 * falls back to the portable path without it; every input is checked again here all the same.
 *
 * Three calls:
 *
 *   compressChunk(raw: Uint8Array, level: number): Promise<Buffer>
 *     One LZ4HC block after its raw length (u32 LE), on the libuv pool: format.ts's 'lz4' chunk.
 *
 *   placeStart(image, jobs: Float64Array, pages: Uint32Array, seen: Uint8Array, memory): placement
 *     Five numbers per job: kind, where its stored bytes start in `image`, stored length, raw
 *     length, where its raw bytes start in their section. Kinds: MEMORY_* chunks hold whole pages
 *     (the section's page p goes to memory page pages[p]); DIFFS_* chunks hold diffs.ts's records,
 *     each page claimed in `seen` (1 = taken; whole pages come marked). Helper threads start on
 *     the jobs at once and the call returns; until placeFinish, the caller must not touch
 *     `memory`, `seen` or `image`, nor grow the memory.
 *
 *   placeFinish(placement): Int32Array
 *     Does the jobs left on the calling thread, waits for the helpers' and returns one number per
 *     job: the diff records it applied (0 for memory), or a negative PLACE_* code.
 */
#include <lz4.h>
#include <lz4hc.h>
#include <node_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE_SIZE 65536u
#define LENGTH_PREFIX 4u
#define RECORD_HEADER 8u
#define RUN_BYTES 4u
#define MAX_RUNS (PAGE_SIZE / RUN_BYTES)
#define MAX_THREADS 4
/* Each helper thread needs at least this much LZ4 output to decode (about half a millisecond). */
#define HELPER_LZ4_BYTES (2.0 * 1024 * 1024)
/* A helper keeps its decode buffer between placements up to this size. */
#define KEPT_SCRATCH_BYTES (4u * 1024u * 1024u)

enum Kind { MEMORY_VERBATIM = 0, MEMORY_LZ4 = 1, DIFFS_VERBATIM = 2, DIFFS_LZ4 = 3 };

/* Kept in step with PLACE_ERRORS in native.ts. */
enum Failure {
  PLACE_BAD_JOB = -1,       /* the job's numbers are out of range */
  PLACE_NOT_LZ4 = -2,       /* not a valid LZ4 block */
  PLACE_WRONG_SIZE = -3,    /* declares or decodes to another size than the header's */
  PLACE_OUTSIDE = -4,       /* a page beyond the page list or the memory */
  PLACE_BAD_RECORD = -5,    /* a diff record is cut off or its runs are out of order */
  PLACE_PAGE_TWICE = -6,    /* a diff record's page is stored twice */
  PLACE_NO_MEMORY = -7,     /* no scratch buffer could be allocated */
};

typedef struct {
  const uint8_t *image;
  size_t image_length;
  const double *jobs;
  size_t job_count;
  const uint32_t *pages;
  size_t page_count;
  _Atomic uint8_t *seen;
  size_t seen_length;
  uint8_t *memory;
  size_t memory_length;
  int32_t *results;
  atomic_size_t next;
  /* Helpers this placement is worth, and how many joined it (both under helpers.lock). */
  int wanted;
  int joined;
  /* Offered to the helpers; finished (none of them in it any more, every job done). */
  bool offered;
  bool finished;
  /* The arguments and the results, kept alive until finished. */
  napi_ref refs[6];
} Work;

/* Where byte `at` of the memory section lands in the memory, or SIZE_MAX when it cannot. */
static size_t page_target(const Work *w, size_t at) {
  size_t index = at / PAGE_SIZE;
  if (index >= w->page_count) return SIZE_MAX;
  size_t to = (size_t)w->pages[index] * PAGE_SIZE + at % PAGE_SIZE;
  return to;
}

/* The section's bytes [to, to + length) land in one contiguous run of memory starting here, or SIZE_MAX. */
static size_t contiguous_target(const Work *w, size_t to, size_t length) {
  size_t start = page_target(w, to);
  if (start == SIZE_MAX || length == 0) return SIZE_MAX;
  size_t first = to / PAGE_SIZE, last = (to + length - 1) / PAGE_SIZE;
  if (last >= w->page_count) return SIZE_MAX;
  for (size_t p = first + 1; p <= last; p++)
    if (w->pages[p] != w->pages[p - 1] + 1) return SIZE_MAX;
  if (start + length > w->memory_length) return SIZE_MAX;
  return start;
}

/* Copies raw section bytes to their pages, page by page. */
static int32_t scatter(const Work *w, const uint8_t *raw, size_t to, size_t length) {
  size_t done = 0;
  while (done < length) {
    size_t at = to + done, within = PAGE_SIZE - at % PAGE_SIZE;
    size_t n = within < length - done ? within : length - done;
    size_t target = page_target(w, at);
    if (target == SIZE_MAX || target + n > w->memory_length) return PLACE_OUTSIDE;
    memcpy(w->memory + target, raw + done, n);
    done += n;
  }
  return 0;
}

static inline uint32_t u32le(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint32_t u16le(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }

/* Applies diffs.ts's records, with every check its applyDiffs makes. Returns the records applied. */
static int32_t apply_diffs(const Work *w, const uint8_t *chunk, size_t length) {
  size_t at = 0;
  int32_t records = 0;
  while (at < length) {
    if (length - at < RECORD_HEADER) return PLACE_BAD_RECORD;
    uint32_t index = u32le(chunk + at), count = u32le(chunk + at + 4);
    size_t table = at + RECORD_HEADER;
    if (count == 0 || count > MAX_RUNS) return PLACE_BAD_RECORD;
    size_t bytes = table + (size_t)RUN_BYTES * count;
    if (bytes > length) return PLACE_BAD_RECORD;
    if (index >= w->seen_length) return PLACE_OUTSIDE;
    size_t base = (size_t)index * PAGE_SIZE;
    if (base + PAGE_SIZE > w->memory_length) return PLACE_OUTSIDE;
    if (atomic_exchange_explicit(&w->seen[index], 1, memory_order_relaxed) != 0) return PLACE_PAGE_TWICE;
    uint32_t previous_end = 0;
    for (size_t r = table; r < table + (size_t)RUN_BYTES * count; r += RUN_BYTES) {
      uint32_t start = u16le(chunk + r), run = u16le(chunk + r + 2) + 1;
      if (start < previous_end || start + run > PAGE_SIZE) return PLACE_BAD_RECORD;
      if (bytes + run > length) return PLACE_BAD_RECORD;
      memcpy(w->memory + base + start, chunk + bytes, run);
      bytes += run;
      previous_end = start + run;
    }
    if (bytes - table > PAGE_SIZE) return PLACE_BAD_RECORD;
    at = bytes;
    records++;
  }
  return records;
}

/* Decodes one LZ4 chunk (its u32 LE raw length, then the block) into `out`, exactly `raw` bytes. */
static int32_t unlz4(const uint8_t *stored, size_t stored_length, uint8_t *out, size_t raw) {
  if (stored_length < LENGTH_PREFIX || u32le(stored) != raw) return PLACE_WRONG_SIZE;
  int got = LZ4_decompress_safe((const char *)stored + LENGTH_PREFIX, (char *)out, (int)(stored_length - LENGTH_PREFIX),
                                (int)raw);
  if (got < 0) return PLACE_NOT_LZ4;
  return (size_t)got == raw ? 0 : PLACE_WRONG_SIZE;
}

static int32_t place_one(const Work *w, size_t job, uint8_t **scratch, size_t *scratch_length) {
  const double *j = w->jobs + 5 * job;
  for (int k = 0; k < 5; k++)
    if (!(j[k] >= 0 && j[k] <= 9007199254740991.0) || j[k] != (double)(uint64_t)j[k]) return PLACE_BAD_JOB;
  int kind = (int)j[0];
  size_t from = (size_t)j[1], stored = (size_t)j[2], raw = (size_t)j[3], to = (size_t)j[4];
  if (kind > DIFFS_LZ4 || from > w->image_length || stored > w->image_length - from || raw > INT32_MAX ||
      stored > INT32_MAX)
    return PLACE_BAD_JOB;
  const uint8_t *input = w->image + from;
  int compressed = kind == MEMORY_LZ4 || kind == DIFFS_LZ4;
  if (!compressed) {
    if (stored != raw) return PLACE_BAD_JOB;
    return kind == MEMORY_VERBATIM ? scatter(w, input, to, raw) : apply_diffs(w, input, raw);
  }
  if (kind == MEMORY_LZ4) {
    /* Most chunks' pages are consecutive in memory: decode straight into them. */
    size_t target = contiguous_target(w, to, raw);
    if (target != SIZE_MAX) return unlz4(input, stored, w->memory + target, raw);
  }
  if (*scratch_length < raw) {
    free(*scratch);
    *scratch = malloc(raw);
    *scratch_length = *scratch ? raw : 0;
    if (!*scratch) return PLACE_NO_MEMORY;
  }
  int32_t status = unlz4(input, stored, *scratch, raw);
  if (status != 0) return status;
  return kind == MEMORY_LZ4 ? scatter(w, *scratch, to, raw) : apply_diffs(w, *scratch, raw);
}

/* Takes jobs until none is left. */
static void take_jobs(Work *w, uint8_t **scratch, size_t *scratch_length) {
  for (;;) {
    size_t job = atomic_fetch_add(&w->next, 1);
    if (job >= w->job_count) break;
    w->results[job] = place_one(w, job, scratch, scratch_length);
  }
}

static int online_cores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/*
 * Helper threads, started once per process and kept: a restore offers its placement to them and
 * goes on with its own work (hashing the image, rebuilding the guest's host side), then takes what
 * jobs are left itself and waits for the helpers' last ones. Starting a thread per restore, or
 * handing the work to the libuv pool, cost 0.1 ms and more before a job began (up to milliseconds
 * when the other core was busy); a helper that wakes late now finds the jobs taken.
 */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t wake; /* a placement is offered */
  pthread_cond_t left; /* a helper left a placement */
  Work *offered;
  unsigned long generation;
  int busy; /* helpers inside `offered` */
} Helpers;

static Helpers helpers = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0};
static pthread_once_t helpers_started = PTHREAD_ONCE_INIT;
static int helper_count = 0;

static void *helper(void *arg) {
  (void)arg;
  uint8_t *scratch = NULL;
  size_t scratch_length = 0;
  unsigned long seen = 0;
  pthread_mutex_lock(&helpers.lock);
  for (;;) {
    while (helpers.offered == NULL || helpers.generation == seen) pthread_cond_wait(&helpers.wake, &helpers.lock);
    seen = helpers.generation;
    Work *w = helpers.offered;
    if (w->joined >= w->wanted) continue;
    w->joined++;
    helpers.busy++;
    pthread_mutex_unlock(&helpers.lock);
    take_jobs(w, &scratch, &scratch_length);
    if (scratch_length > KEPT_SCRATCH_BYTES) {
      free(scratch);
      scratch = NULL;
      scratch_length = 0;
    }
    pthread_mutex_lock(&helpers.lock);
    helpers.busy--;
    pthread_cond_broadcast(&helpers.left);
  }
  return NULL;
}

static void start_helpers(void) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  for (int t = 1; t < online_cores(); t++) {
    pthread_t id;
    if (pthread_create(&id, &attr, helper, NULL) == 0) helper_count++;
  }
  pthread_attr_destroy(&attr);
}

/* Offers `w` to the helpers, if it is worth any and they are not on another placement. */
static void offer(Work *w) {
  /*
   * Helpers only for LZ4 work worth one: copies and diffs run at memory speed on one core, and on
   * the 1 MiB bench guest's 1.6 MB of diffs a helper cost more than it saved.
   */
  double lz4_bytes = 0;
  for (size_t i = 0; i < w->job_count; i++)
    if (w->jobs[5 * i] == MEMORY_LZ4 || w->jobs[5 * i] == DIFFS_LZ4) lz4_bytes += w->jobs[5 * i + 3];
  w->wanted = (int)(lz4_bytes / HELPER_LZ4_BYTES);
  if (w->wanted == 0) return;
  pthread_once(&helpers_started, start_helpers);
  pthread_mutex_lock(&helpers.lock);
  if (helpers.offered == NULL && helper_count > 0) {
    helpers.offered = w;
    helpers.generation++;
    w->offered = true;
    pthread_cond_broadcast(&helpers.wake);
  }
  pthread_mutex_unlock(&helpers.lock);
}

/* Takes the jobs left on this thread, then waits until no helper is inside `w`. */
static void finish(Work *w) {
  if (w->finished) return;
  uint8_t *scratch = NULL;
  size_t scratch_length = 0;
  take_jobs(w, &scratch, &scratch_length);
  free(scratch);
  if (w->offered) {
    pthread_mutex_lock(&helpers.lock);
    if (helpers.offered == w) helpers.offered = NULL;
    while (helpers.busy > 0) pthread_cond_wait(&helpers.left, &helpers.lock);
    pthread_mutex_unlock(&helpers.lock);
  }
  w->finished = true;
}

/* ---- Node-API glue ---- */

#define CHECK(call)                                                                                                    \
  do {                                                                                                                 \
    if ((call) != napi_ok) return NULL;                                                                                \
  } while (0)

static napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, "ROAM_ERR_NATIVE", message);
  return NULL;
}

/* The bytes of a typed array of the given type, or NULL (and a TypeError thrown). */
static void *typed(napi_env env, napi_value value, napi_typedarray_type want, size_t *length, const char *what) {
  bool is_typed = false;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) {
    throw_type(env, what);
    return NULL;
  }
  napi_typedarray_type type;
  size_t count = 0, offset = 0;
  void *data = NULL;
  napi_value buffer;
  if (napi_get_typedarray_info(env, value, &type, &count, &data, &buffer, &offset) != napi_ok || type != want) {
    throw_type(env, what);
    return NULL;
  }
  *length = count;
  /* An empty typed array may have no storage at all; callers only read `count` elements. */
  static uint8_t empty;
  return data ? data : &empty;
}

static void release(napi_env env, Work *w) {
  for (int i = 0; i < 6; i++)
    if (w->refs[i]) napi_delete_reference(env, w->refs[i]);
  memset(w->refs, 0, sizeof w->refs);
}

/* A placement JavaScript dropped without finishing it: finished here, so nothing writes on. */
static void drop_placement(napi_env env, void *data, void *hint) {
  (void)hint;
  Work *w = data;
  finish(w);
  release(env, w);
  free(w);
}

static napi_value place_start(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 5) return throw_type(env, "placeStart(image, jobs, pages, seen, memory)");
  Work w;
  memset(&w, 0, sizeof w);
  size_t job_numbers = 0, seen_length = 0;
  if (!(w.image = typed(env, argv[0], napi_uint8_array, &w.image_length, "image must be a Uint8Array"))) return NULL;
  if (!(w.jobs = typed(env, argv[1], napi_float64_array, &job_numbers, "jobs must be a Float64Array"))) return NULL;
  if (!(w.pages = typed(env, argv[2], napi_uint32_array, &w.page_count, "pages must be a Uint32Array"))) return NULL;
  if (!(w.seen = typed(env, argv[3], napi_uint8_array, &seen_length, "seen must be a Uint8Array"))) return NULL;
  if (!(w.memory = typed(env, argv[4], napi_uint8_array, &w.memory_length, "memory must be a Uint8Array"))) return NULL;
  if (job_numbers % 5 != 0) return throw_type(env, "jobs must hold five numbers per job");
  w.seen_length = seen_length;
  w.job_count = job_numbers / 5;

  napi_value results_buffer;
  void *results_data = NULL;
  CHECK(napi_create_arraybuffer(env, w.job_count * sizeof(int32_t), &results_data, &results_buffer));
  CHECK(napi_create_typedarray(env, napi_int32_array, w.job_count, results_buffer, 0, &argv[5]));
  w.results = results_data;
  atomic_init(&w.next, 0);

  Work *p = malloc(sizeof *p);
  if (!p) return throw_type(env, "out of memory");
  *p = w;
  napi_value handle;
  for (int i = 0; i < 6; i++) {
    if (napi_create_reference(env, argv[i], 1, &p->refs[i]) != napi_ok) {
      release(env, p);
      free(p);
      return throw_type(env, "cannot hold the placement's arguments");
    }
  }
  if (napi_create_external(env, p, drop_placement, NULL, &handle) != napi_ok) {
    release(env, p);
    free(p);
    return throw_type(env, "cannot make the placement's handle");
  }
  offer(p);
  return handle;
}

static napi_value place_finish(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype type;
  Work *w = NULL;
  if (argc != 1 || napi_typeof(env, argv[0], &type) != napi_ok || type != napi_external ||
      napi_get_value_external(env, argv[0], (void **)&w) != napi_ok || !w)
    return throw_type(env, "placeFinish(placement)");
  if (w->finished) return throw_type(env, "the placement was already finished");
  finish(w);
  napi_value results = NULL;
  napi_status status = napi_get_reference_value(env, w->refs[5], &results);
  release(env, w);
  if (status != napi_ok || !results) return throw_type(env, "the placement's results are gone");
  return results;
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref input_ref;
  const uint8_t *input;
  size_t input_length;
  int level;
  uint8_t *output;
  size_t output_length;
  int failed;
} Compress;

static void compress_execute(napi_env env, void *data) {
  (void)env;
  Compress *c = data;
  int bound = LZ4_compressBound((int)c->input_length);
  c->output = malloc(LENGTH_PREFIX + (size_t)bound);
  if (!c->output) {
    c->failed = 1;
    return;
  }
  uint32_t n = (uint32_t)c->input_length;
  c->output[0] = n & 0xff;
  c->output[1] = n >> 8 & 0xff;
  c->output[2] = n >> 16 & 0xff;
  c->output[3] = n >> 24 & 0xff;
  int written = c->input_length == 0 ? 0
                                     : LZ4_compress_HC((const char *)c->input, (char *)c->output + LENGTH_PREFIX,
                                                       (int)c->input_length, bound, c->level);
  if (c->input_length > 0 && written <= 0) c->failed = 1;
  c->output_length = LENGTH_PREFIX + (size_t)(written > 0 ? written : 0);
}

static void free_output(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void compress_complete(napi_env env, napi_status status, void *data) {
  Compress *c = data;
  napi_value result = NULL;
  if (status == napi_ok && !c->failed &&
      napi_create_external_buffer(env, c->output_length, c->output, free_output, NULL, &result) == napi_ok) {
    napi_resolve_deferred(env, c->deferred, result);
  } else {
    free(c->output);
    napi_value message, error;
    napi_create_string_utf8(env, "LZ4 compression failed", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &error);
    napi_reject_deferred(env, c->deferred, error);
  }
  napi_delete_reference(env, c->input_ref);
  napi_delete_async_work(env, c->work);
  free(c);
}

static napi_value compress_chunk(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 2) return throw_type(env, "compressChunk(raw, level)");
  size_t length = 0;
  const uint8_t *input = typed(env, argv[0], napi_uint8_array, &length, "raw must be a Uint8Array");
  if (!input) return NULL;
  int32_t level = 0;
  if (napi_get_value_int32(env, argv[1], &level) != napi_ok || level < 1 || level > LZ4HC_CLEVEL_MAX)
    return throw_type(env, "level must be an integer from 1 to 12");
  if (length > (size_t)LZ4_MAX_INPUT_SIZE) return throw_type(env, "chunk too large for LZ4");
  Compress *c = calloc(1, sizeof *c);
  if (!c) return throw_type(env, "out of memory");
  c->input = input;
  c->input_length = length;
  c->level = level;
  napi_value promise, name;
  if (napi_create_reference(env, argv[0], 1, &c->input_ref) != napi_ok) {
    free(c);
    return throw_type(env, "cannot hold the chunk");
  }
  if (napi_create_promise(env, &c->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "roam:lz4hc", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, compress_execute, compress_complete, c, &c->work) != napi_ok ||
      napi_queue_async_work(env, c->work) != napi_ok) {
    napi_delete_reference(env, c->input_ref);
    free(c);
    return throw_type(env, "cannot queue the compression");
  }
  return promise;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  CHECK(napi_create_function(env, "placeStart", NAPI_AUTO_LENGTH, place_start, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "placeStart", fn));
  CHECK(napi_create_function(env, "placeFinish", NAPI_AUTO_LENGTH, place_finish, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "placeFinish", fn));
  CHECK(napi_create_function(env, "compressChunk", NAPI_AUTO_LENGTH, compress_chunk, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "compressChunk", fn));
  napi_value version;
  CHECK(napi_create_uint32(env, 3, &version));
  CHECK(napi_set_named_property(env, exports, "abi", version));
  return exports;
}
