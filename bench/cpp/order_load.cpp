// Load for bench/orders.py: CONNECTIONS threads, each a tradehub::Client inserting one-row
// orders (without echo), one at a time, for SECONDS; prints the total acknowledged and the
// connections that failed, then with --latencies every insert's latency in microseconds, one a line.
//
//   order_load HOST PORT TOKEN CONNECTIONS SECONDS [--latencies]
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tradehub_client.hpp"

using namespace tradehub;

int main(int argc, char** argv) {
    bool latencies = argc == 7 && std::string(argv[6]) == "--latencies";
    if (argc != 6 && !latencies) {
        std::cerr << "usage: order_load HOST PORT TOKEN CONNECTIONS SECONDS [--latencies]\n";
        return 2;
    }
    std::string host = argv[1];
    auto port = static_cast<std::uint16_t>(std::atoi(argv[2]));
    std::string token = argv[3];
    int connections = std::atoi(argv[4]);
    double seconds = std::atof(argv[5]);
    // Ids unique across runs: the hub answers a reused client_order_id with CONFLICT.
    std::string run = std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
    std::atomic<long> total{0};
    std::atomic<int> failed{0};
    std::vector<double> all;
    std::mutex lock;
    std::vector<std::thread> threads;
    for (int c = 0; c < connections; ++c) {
        threads.emplace_back([&, c] {
            try {
                Client hub(host, port, Role::FRONTEND, token, "order-load");
                OrderRow order;
                order.symbol = "AAPL";
                order.asset_class = "us_equity";
                order.side = "buy";
                order.type = "limit";
                order.time_in_force = "day";
                order.order_class = "simple";
                order.qty = Decimal::parse("10");
                order.limit_price = Decimal::parse("189.12");
                order.status = "new";
                auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
                long count = 0;
                std::vector<double> mine;
                while (std::chrono::steady_clock::now() < end) {
                    order.client_order_id = "load-" + run + "-" + std::to_string(c) + "-" + std::to_string(count);
                    order.created_at = order.updated_at =
                        Timestamp{std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::system_clock::now().time_since_epoch()).count()};
                    auto start = std::chrono::steady_clock::now();
                    hub.insert<SQLTable::ORDER>({order});
                    mine.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                                       .count());
                    ++count;
                }
                total += count;
                {
                    std::lock_guard<std::mutex> guard(lock);
                    all.insert(all.end(), mine.begin(), mine.end());
                }
                hub.shutdown();
            } catch (const std::exception& e) {
                std::cerr << "connection " << c << ": " << e.what() << "\n";
                ++failed;
            }
        });
    }
    for (auto& t : threads) t.join();
    std::cout << total.load() << " " << failed.load() << "\n";
    if (latencies)
        for (double us : all) std::cout << us << "\n";
    return failed ? 1 : 0;
}
