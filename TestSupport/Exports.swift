// Suites measure with the same validator the benchmark commands use.
@_exported public import ProdReadyPerformance
// Every convergence check accounts with the same checker the CLI's scenarios use.
@_exported public import ProdReadyVerification
// Suites talk to the reference services with the same client and tokens `prodready bench` uses.
@_exported public import ProdReadyService
// Seeded schedules, faults and load: the same implementation `prodready chaos` runs.
@_exported public import ProdReadyChaos
