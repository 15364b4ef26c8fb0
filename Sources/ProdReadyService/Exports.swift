// JSONValue and ProdReadyError are part of every service's vocabulary.
@_exported public import ProdReadyCore
