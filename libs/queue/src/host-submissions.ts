import {
  FleetError,
  type HostDocument,
  type OperationRecord,
  type OperationRequest,
  submitOperation,
} from '#fleet';

/**
 * Submits several operations to one host document, in the given order, as one change: each sees
 * the document as the ones before it left it (so they share the host's clock and queue in this
 * order). A request the document refuses is answered with its error and the others go on.
 */
export function submitOnHost(
  doc: HostDocument,
  requests: readonly OperationRequest[],
): { doc: HostDocument; results: Array<OperationRecord | FleetError> } {
  let current = doc;
  const results = requests.map((request) => {
    try {
      const submitted = submitOperation(current, request);
      current = submitted.doc;
      return submitted.op;
    } catch (error) {
      if (!(error instanceof FleetError)) throw error;
      return error;
    }
  });
  return { doc: current, results };
}
