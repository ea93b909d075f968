// Load for bench/orders.py: CONNECTIONS threads, each a tradehub::Client inserting one-row
// orders, one at a time, for SECONDS; prints the total acknowledged.
//
//   order_load HOST PORT TOKEN CONNECTIONS SECONDS
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>
#include <vector>

#include "tradehub_client.hpp"

using namespace tradehub;

int main(int argc, char** argv) {
    if (argc != 6) {
        std::cerr << "usage: order_load HOST PORT TOKEN CONNECTIONS SECONDS\n";
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
                while (std::chrono::steady_clock::now() < end) {
                    order.client_order_id = "load-" + run + "-" + std::to_string(c) + "-" + std::to_string(count);
                    order.created_at = order.updated_at =
                        Timestamp{std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::system_clock::now().time_since_epoch()).count()};
                    hub.insert<SQLTable::ORDER>({order});
                    ++count;
                }
                total += count;
                hub.shutdown();
            } catch (const std::exception& e) {
                std::cerr << "connection " << c << ": " << e.what() << "\n";
                ++failed;
            }
        });
    }
    for (auto& t : threads) t.join();
    std::cout << total.load() << " " << failed.load() << "\n";
    return failed ? 1 : 0;
}
