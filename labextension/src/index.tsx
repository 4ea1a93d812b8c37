import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Clipboard,
  Dialog,
  ICommandPalette,
  InputDialog,
  MainAreaWidget,
  Notification,
  showDialog
} from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { KaitoClient, Requester } from './api';
import { ChatPanel } from './components/ChatPanel';
import { LogsPanel } from './components/LogsPanel';
import { ISidebarActions } from './components/Sidebar';
import { kaitoIcon } from './icon';
import { WORKSPACE_EVENT, WorkspaceStore } from './model';
import { KaitoSidebar } from './sidebar';
import type { IWorkspaceChanged } from './wire';

const PLUGIN_ID = 'kaito-jupyter:sidebar';

namespace CommandIDs {
  export const show = 'kaito:show-sidebar';
  export const refresh = 'kaito:refresh';
  export const chat = 'kaito:open-chat';
  export const logs = 'kaito:open-logs';
  export const remove = 'kaito:delete-workspace';
  export const switchBackend = 'kaito:switch-backend';
}

interface IKaitoSettings {
  confirmDelete: boolean;
  maxTokens: number;
  temperature: number;
}

/**
 * The Kaito sidebar, chat and logs panels, and palette commands. Every request goes through
 * ServerConnection; live updates come from the server's event bus, not from polling.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Kaito workspaces in JupyterLab: sidebar, chat and logs.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, ISettingRegistry],
  activate: async (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    registry: ISettingRegistry | null
  ) => {
    const server = app.serviceManager.serverSettings;
    const request: Requester = (path, init) =>
      ServerConnection.makeRequest(
        URLExt.join(server.baseUrl, path),
        init ?? {},
        server
      );
    const client = new KaitoClient(request);
    const store = new WorkspaceStore();
    const settings: IKaitoSettings = {
      confirmDelete: true,
      maxTokens: 256,
      temperature: 0.7
    };

    if (registry) {
      try {
        const loaded = await registry.load(PLUGIN_ID);
        const read = () => Object.assign(settings, loaded.composite as object);
        read();
        loaded.changed.connect(read);
      } catch (e) {
        console.warn('kaito-jupyter: settings not loaded', e);
      }
    }

    const error = (message: string) =>
      Notification.error(message, { autoClose: 8000 });
    const refresh = async () => {
      try {
        store.reset((await client.workspaces()).items);
      } catch (e) {
        error(`Kaito: ${(e as Error).message}`);
      }
    };

    // Pushed changes: the backend's watch, through the Jupyter server's EventLogger.
    app.serviceManager.events.stream.connect((_, event) => {
      if (event.schema_id === WORKSPACE_EVENT) {
        store.applyChange(event as unknown as IWorkspaceChanged);
      }
    });

    const pick = async (
      title: string,
      names: string[]
    ): Promise<string | null> => {
      if (names.length === 0) {
        error('Kaito: no workspace to choose from');
        return null;
      }
      const result = await InputDialog.getItem({ title, items: names });
      return result.button.accept ? result.value : null;
    };

    const openChat = (name?: string) => {
      const content = ReactWidget.create(
        <ChatPanel
          client={client}
          store={store}
          initial={name}
          maxTokens={settings.maxTokens}
          temperature={settings.temperature}
        />
      );
      const widget = new MainAreaWidget({ content });
      widget.id = `kaito-chat-${Date.now()}`;
      widget.title.label = name ? `Chat: ${name}` : 'Kaito chat';
      widget.title.icon = kaitoIcon;
      widget.title.closable = true;
      app.shell.add(widget, 'main');
      app.shell.activateById(widget.id);
    };

    const openLogs = (name: string) => {
      const content = ReactWidget.create(
        <LogsPanel client={client} name={name} />
      );
      const widget = new MainAreaWidget({ content });
      widget.id = `kaito-logs-${name}-${Date.now()}`;
      widget.title.label = `Logs: ${name}`;
      widget.title.icon = kaitoIcon;
      widget.title.closable = true;
      app.shell.add(widget, 'main', { mode: 'split-bottom' });
      app.shell.activateById(widget.id);
    };

    const remove = async (name: string) => {
      if (settings.confirmDelete) {
        const answer = await showDialog({
          title: 'Delete workspace',
          body: `Delete ${name}? Its inference server and nodes are removed.`,
          buttons: [
            Dialog.cancelButton(),
            Dialog.warnButton({ label: 'Delete' })
          ]
        });
        if (!answer.button.accept) {
          return;
        }
      }
      try {
        await client.remove(name);
      } catch (e) {
        error(`Kaito: ${(e as Error).message}`);
      }
    };

    const actions: ISidebarActions = {
      openChat,
      openLogs,
      remove,
      describe: name => client.workspace(name),
      copySnippet: ws => {
        Clipboard.copyToSystem(ws.snippet);
        Notification.success(`Copied a %%kaito cell for ${ws.name}`, {
          autoClose: 3000
        });
      },
      error
    };

    const sidebar = new KaitoSidebar(client, store, actions, refresh);
    app.shell.add(sidebar, 'left', { rank: 900 });
    restorer?.add(sidebar, sidebar.id);

    const names = () => store.list.map(ws => ws.name);
    app.commands.addCommand(CommandIDs.show, {
      label: 'Kaito: Show Workspaces',
      execute: () => app.shell.activateById(sidebar.id)
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Kaito: Reload Workspaces',
      execute: refresh
    });
    app.commands.addCommand(CommandIDs.chat, {
      label: 'Kaito: Open Chat',
      execute: args => openChat((args.name as string) || undefined)
    });
    app.commands.addCommand(CommandIDs.logs, {
      label: 'Kaito: Open Logs',
      execute: async args => {
        const name = (args.name as string) || (await pick('Logs of', names()));
        if (name) {
          openLogs(name);
        }
      }
    });
    app.commands.addCommand(CommandIDs.remove, {
      label: 'Kaito: Delete Workspace',
      execute: async args => {
        const name = (args.name as string) || (await pick('Delete', names()));
        if (name) {
          await remove(name);
        }
      }
    });
    app.commands.addCommand(CommandIDs.switchBackend, {
      label: 'Kaito: Switch Backend',
      execute: async () => {
        const result = await InputDialog.getItem({
          title: 'Kaito backend',
          items: ['local', 'kubernetes']
        });
        if (result.button.accept && result.value) {
          try {
            await client.use(result.value as 'local' | 'kubernetes');
            await refresh();
            sidebar.update();
          } catch (e) {
            error(`Kaito: ${(e as Error).message}`);
          }
        }
      }
    });
    for (const command of Object.values(CommandIDs)) {
      palette?.addItem({ command, category: 'Kaito' });
    }
    await refresh();
  }
};

export default plugin;
