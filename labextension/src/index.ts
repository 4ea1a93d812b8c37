import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';

import { version } from '../../package.json';
import { KaitoSidebar } from './sidebar';

/**
 * Adds the Kaito panel to the left sidebar.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'kaito-jupyter:sidebar',
  description: 'The Kaito workspaces sidebar.',
  autoStart: true,
  optional: [ILayoutRestorer],
  activate: (app: JupyterFrontEnd, restorer: ILayoutRestorer | null) => {
    const sidebar = new KaitoSidebar(version);
    app.shell.add(sidebar, 'left', { rank: 900 });
    restorer?.add(sidebar, sidebar.id);
  }
};

export default plugin;
