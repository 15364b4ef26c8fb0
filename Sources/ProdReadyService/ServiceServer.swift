public import Hummingbird
public import Logging
public import ServiceLifecycle

/// Assembles one service process: its router behind the edge middleware, the long-lived `Service`s (consumers,
/// relays, sweepers) in the same `ServiceGroup`, steps that must finish before the server takes requests
/// (migrations), and a callback with the bound port (0 asks the system for a free one).
public enum ServiceServer {
    public static func application(
        router: ServiceRouter,
        host: String,
        port: Int,
        services: [any Service] = [],
        logger: Logger,
        beforeServerStarts: [@Sendable () async throws -> Void] = [],
        onListening: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        var application = Application(
            router: router.router,
            configuration: .init(address: .hostname(host, port: port), serverName: router.title),
            services: services,
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
            logger: logger
        )
        for step in beforeServerStarts { application.beforeServerStarts(perform: step) }
        return application
    }
}
