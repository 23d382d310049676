// anchor_stop_token.cpp - the C++20 std::stop_token figures that
// bench_token.c is compared with (g++ -std=c++20 -O2).  The "child" of a
// stop_source is emulated the usual way: a child stop_source plus a
// stop_callback on the parent's token that requests stop on the child.
#include <malloc.h>
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <thread>
#include <vector>

#include "bench.h"

namespace {

constexpr long SPIN = 20000000, CHILDREN = 1000000;
constexpr int CALLBACKS = 100, TREE = 100000;

double per_op_ns(int64_t t0, int64_t t1, long n) { return double(t1 - t0) / double(n); }

struct Child {
    std::stop_source source;
    std::stop_callback<std::function<void()>> link;
    explicit Child(std::stop_token parent)
        : link(parent, [this] { source.request_stop(); }) {}
};

double is_cancelled()
{
    double v[BENCH_REPS];
    std::stop_source src;
    std::stop_token tok = src.get_token();
    for (double &x : v) {
        long hits = 0;
        int64_t t0 = bench_now_ns();
        for (long i = 0; i < SPIN; i++) {
            hits += tok.stop_requested();
            BENCH_KEEP(hits);
        }
        x = per_op_ns(t0, bench_now_ns(), SPIN);
    }
    return bench_median(v, BENCH_REPS);
}

double child()
{
    double v[BENCH_REPS];
    std::stop_source root;
    for (double &x : v) {
        int64_t t0 = bench_now_ns();
        for (long i = 0; i < CHILDREN; i++) {
            auto *c = new Child(root.get_token());
            BENCH_KEEP(c);
            delete c;
        }
        x = per_op_ns(t0, bench_now_ns(), CHILDREN);
    }
    return bench_median(v, BENCH_REPS);
}

double child_memory()
{
    constexpr int N = 100000;
    std::vector<Child *> kids(N);
    std::stop_source root;
    size_t before = mallinfo2().uordblks;
    for (auto &k : kids)
        k = new Child(root.get_token());
    size_t after = mallinfo2().uordblks;
    for (auto *k : kids)
        delete k;
    return double(after - before) / N;
}

struct Noop {
    void operator()() const noexcept {}
};

double callback()
{
    double v[BENCH_REPS];
    std::stop_source src;
    std::stop_token tok = src.get_token();
    for (double &x : v) {
        int64_t t0 = bench_now_ns();
        for (long i = 0; i < CHILDREN; i++) {
            std::stop_callback<Noop> cb(tok, Noop{});
            BENCH_KEEP(&cb);
        }
        x = per_op_ns(t0, bench_now_ns(), CHILDREN);
    }
    return bench_median(v, BENCH_REPS);
}

// The same from 4 threads at once on one stop_source (wall time over all
// the threads' operations), as bench_token.c's callback_add_remove_4_threads.
double callback_contended()
{
    constexpr int THREADS = 4;
    constexpr long OPS = 500000;
    double v[BENCH_REPS];
    std::stop_source src;
    for (double &x : v) {
        std::atomic<int> ready{0};
        std::atomic<bool> go{false};
        std::vector<std::thread> ts;
        for (int i = 0; i < THREADS; i++)
            ts.emplace_back([&] {
                std::stop_token tok = src.get_token();
                ready++;
                while (!go.load())
                    std::this_thread::yield();
                for (long n = 0; n < OPS; n++) {
                    std::stop_callback<Noop> cb(tok, Noop{});
                    BENCH_KEEP(&cb);
                }
            });
        while (ready.load() < THREADS)
            std::this_thread::yield();
        int64_t t0 = bench_now_ns();
        go = true;
        for (auto &t : ts)
            t.join();
        x = per_op_ns(t0, bench_now_ns(), THREADS * OPS);
    }
    return bench_median(v, BENCH_REPS);
}

double cancel_callbacks()
{
    constexpr int ROUNDS = 2000;
    std::vector<double> v(ROUNDS);
    std::thread([] {}).join(); // libstdc++ takes its multi-threaded paths from now on
    for (double &x : v) {
        std::stop_source src;
        std::vector<std::optional<std::stop_callback<Noop>>> cbs(CALLBACKS);
        for (auto &cb : cbs)
            cb.emplace(src.get_token(), Noop{});
        int64_t t0 = bench_now_ns();
        src.request_stop();
        x = double(bench_now_ns() - t0);
    }
    return bench_median(v.data(), ROUNDS);
}

double tree()
{
    double v[BENCH_REPS];
    for (double &x : v) {
        std::stop_source root;
        std::vector<std::unique_ptr<Child>> nodes;
        nodes.reserve(TREE);
        nodes.push_back(nullptr);
        for (int i = 1; i < TREE; i++) {
            int p = (i - 1) / 10;
            nodes.push_back(std::make_unique<Child>(p == 0 ? root.get_token()
                                                           : nodes[p]->source.get_token()));
        }
        int64_t t0 = bench_now_ns();
        root.request_stop();
        x = double(bench_now_ns() - t0) / 1000.0;
        while (nodes.size() > 1)
            nodes.pop_back();
    }
    return bench_median(v, BENCH_REPS);
}


// Scale: as bench_token.c's bench_scale.  THREADS threads, OPS operations
// each, started together; wall / OPS per thread on their own stop_source
// ("own"), wall / (THREADS * OPS) on one shared stop_source ("shared").
// A child is the usual emulation (Child above).
constexpr long SCALE_OPS = 1000000;

double scale(int threads, bool shared, bool child)
{
    double v[BENCH_REPS];
    std::vector<std::stop_source> sources(threads);
    for (double &x : v) {
        std::atomic<int> ready{0};
        std::atomic<bool> go{false};
        std::vector<std::thread> ts;
        for (int i = 0; i < threads; i++)
            ts.emplace_back([&, i] {
                std::stop_token tok = sources[shared ? 0 : i].get_token();
                ready++;
                while (!go.load())
                    std::this_thread::yield();
                for (long n = 0; n < SCALE_OPS; n++) {
                    if (child) {
                        auto *c = new Child(tok);
                        BENCH_KEEP(c);
                        delete c;
                    } else {
                        std::stop_callback<Noop> cb(tok, Noop{});
                        BENCH_KEEP(&cb);
                    }
                }
            });
        while (ready.load() < threads)
            std::this_thread::yield();
        int64_t t0 = bench_now_ns();
        go = true;
        for (auto &t : ts)
            t.join();
        x = per_op_ns(t0, bench_now_ns(), shared ? threads * SCALE_OPS : SCALE_OPS);
    }
    return bench_median(v, BENCH_REPS);
}

void scale_all()
{
    double cb1 = scale(1, false, false), cb2 = scale(2, false, false);
    bench_print("anchor_scale_callback_own_1_thread", cb1, "ns");
    bench_print("anchor_scale_callback_own_2_threads", cb2, "ns");
    bench_ratio("anchor_scale_callback_own_slowdown", cb2, cb1);
    double ch1 = scale(1, false, true), ch2 = scale(2, false, true);
    bench_print("anchor_scale_child_own_1_thread", ch1, "ns");
    bench_print("anchor_scale_child_own_2_threads", ch2, "ns");
    bench_ratio("anchor_scale_child_own_slowdown", ch2, ch1);
    bench_print("anchor_scale_child_shared_2_threads", scale(2, true, true), "ns");
    bench_print("anchor_scale_callback_shared_2_threads", scale(2, true, false), "ns");
    bench_print("anchor_scale_callback_shared_4_threads", scale(4, true, false), "ns");
    bench_print("anchor_scale_callback_shared_8_threads", scale(8, true, false), "ns");
}

} // namespace

int main()
{
    bench_print("anchor_stop_requested", is_cancelled(), "ns");
    bench_print("anchor_child_create_release", child(), "ns");
    bench_print("anchor_child_memory", child_memory(), "bytes");
    bench_print("anchor_stop_callback", callback(), "ns");
    bench_print("anchor_stop_callback_4_threads", callback_contended(), "ns");
    bench_print("anchor_request_stop_100_callbacks", cancel_callbacks(), "ns");
    bench_print("anchor_cancel_tree_100k", tree(), "us");
    scale_all();
    return 0;
}
