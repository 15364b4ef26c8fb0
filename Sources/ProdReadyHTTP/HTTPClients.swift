public import AsyncHTTPClient
import Logging
import NIOCore

/// The HTTP client every ProdReady process uses (S3, service APIs, health probes), instead of `HTTPClient.shared`.
///
/// `HTTPClient.shared` retries a refused connection with a growing back-off until the request's deadline, so a
/// request to a stopped server fails only when its whole timeout ran out (a CI run caught it: with S3 stopped, the
/// OMS API spent its full 3 s S3 deadline on every create before answering 503, and a probe queued behind the
/// load's requests got no answer in 5 s). After a long outage the back-off also delays the first attempt once the
/// server is back. Here a refused connection fails the request at once; every caller has a retry loop of its own
/// that knows what the request was for.
///
/// It also allows 64 connections per host instead of 8: a load generator with eight requests in flight must not
/// make the check beside it wait for a connection.
public enum HTTPClients {
    public static let failingFast: HTTPClient = {
        var configuration = HTTPClient.Configuration.singletonConfiguration
        configuration.connectionPool = HTTPClient.Configuration.ConnectionPool(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: .seconds(5), read: .seconds(90))
        // Process-wide and never shut down, like `HTTPClient.shared`: its deinit (which asserts a shutdown) never runs.
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration, backgroundActivityLogger: Logger(label: "prodready.http", factory: { _ in SwiftLogNoOpLogHandler() }))
    }()
}
