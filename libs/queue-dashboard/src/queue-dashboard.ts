import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter as BullBoardFastifyAdapter } from '@bull-board/fastify';
import { APP_CONFIG, type AppConfig } from '#config';
import { ApiError, toErrorResponse } from '#http';
import { FleetQueues } from '#queue';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { DashboardAuth, QUEUE_DASHBOARD_PATH } from './dashboard-auth.js';

/** bull-board's page loads its fonts from Google; the dashboard asks nothing of the internet. */
const EXTERNAL_STYLESHEET =
  /<link\b[^>]*\bhref="https?:\/\/[^"]*"[^>]*\brel="stylesheet"[^>]*>\s*/g;

function withoutExternalFonts(reply: FastifyReply, payload: unknown): unknown {
  const type = reply.getHeader('content-type');
  if (typeof payload !== 'string' || typeof type !== 'string' || !type.startsWith('text/html')) {
    return payload;
  }
  return payload.replace(EXTERNAL_STYLESHEET, '');
}

/**
 * Serves bull-board at `/admin/queues` on the app's Fastify instance, over the fleet's own
 * queues (so with their `{prefix}`). Read-only: jobs belong to operations recorded in the host
 * documents, and a job removed or re-run behind the daemon's back would leave them inconsistent;
 * cancelling goes through `DELETE /v1/jobs/{id}`.
 */
@Injectable()
export class QueueDashboard implements OnModuleInit {
  private readonly auth: DashboardAuth;

  constructor(
    private readonly adapterHost: HttpAdapterHost,
    private readonly queues: FleetQueues,
    @Inject(APP_CONFIG) config: AppConfig,
  ) {
    this.auth = new DashboardAuth(config.apiToken);
  }

  onModuleInit(): void {
    const board = new BullBoardFastifyAdapter();
    board.setBasePath(QUEUE_DASHBOARD_PATH);
    const options = { readOnlyMode: true, allowRetries: false };
    createBullBoard({
      queues: [
        new BullMQAdapter(this.queues.operations, {
          ...options,
          description: 'VM operations: boot, reboot and terminate, one job per operation',
        }),
        new BullMQAdapter(this.queues.batches, {
          ...options,
          description: 'Batches: one job drives the operations of a batch',
        }),
      ],
      serverAdapter: board,
      options: { uiConfig: { boardTitle: 'tdx-fleet' } },
    });
    const fastify = this.adapterHost.httpAdapter.getInstance<FastifyInstance>();
    // Queued, not awaited: awaiting would load every plugin and route registered so far, before
    // Nest installs its error and not-found handlers (after this hook), and the app's routes
    // would keep Fastify's default error answers. Fastify loads it with the rest when it starts.
    void fastify.register(
      async (scope) => {
        scope.addHook('onRequest', (request, reply) => this.guard(request, reply));
        scope.addHook('onSend', (_request, reply, payload) =>
          Promise.resolve(withoutExternalFonts(reply, payload)),
        );
        await scope.register(board.registerPlugin());
      },
      { prefix: QUEUE_DASHBOARD_PATH },
    );
  }

  private async guard(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const decision = this.auth.decide({
      method: request.method,
      url: request.url,
      headers: request.headers,
      secure: request.protocol === 'https',
    });
    switch (decision.kind) {
      case 'allow':
        return;
      case 'login':
        await reply
          .code(303)
          .header('Set-Cookie', decision.setCookie)
          .header('Location', decision.location)
          .header('Cache-Control', 'no-store')
          .header('Referrer-Policy', 'no-referrer')
          .send();
        return;
      case 'refuse': {
        const { status, body, headers } = toErrorResponse(
          new ApiError(401, 'unauthorized', decision.message, undefined, {
            'WWW-Authenticate': 'Bearer',
          }),
        );
        await reply.code(status).headers(headers).send(body);
        return;
      }
    }
  }
}
