import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { KaitoClient } from './api';
import { ISidebarActions, Sidebar } from './components/Sidebar';
import { kaitoIcon } from './icon';
import { WorkspaceStore } from './model';

/** The Kaito panel in the left sidebar: a React view over the live workspace store. */
export class KaitoSidebar extends ReactWidget {
  constructor(
    private readonly client: KaitoClient,
    private readonly store: WorkspaceStore,
    private readonly actions: ISidebarActions,
    private readonly onSwitched: () => void
  ) {
    super();
    this.id = 'kaito-jupyter-sidebar';
    this.addClass('jp-KaitoSidebar');
    this.title.icon = kaitoIcon;
    this.title.caption = 'Kaito workspaces';
  }

  render(): JSX.Element {
    return (
      <Sidebar
        client={this.client}
        store={this.store}
        actions={this.actions}
        onSwitched={this.onSwitched}
      />
    );
  }
}
